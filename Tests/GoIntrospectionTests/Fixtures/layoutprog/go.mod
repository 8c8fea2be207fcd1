module ferret.example/layoutprog

go 1.19
