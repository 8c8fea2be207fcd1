module ferret.example/layoutgen

go 1.19
