module ferret.example/okserver

go 1.19
