module ferret.test/httpsrv

go 1.19
