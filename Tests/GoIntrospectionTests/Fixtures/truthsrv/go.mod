module ferret.example/truthsrv

go 1.19
