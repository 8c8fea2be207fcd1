module ferret.example/demo

go 1.19
