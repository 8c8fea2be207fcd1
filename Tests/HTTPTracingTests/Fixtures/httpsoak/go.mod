module ferret.test/httpsoak

go 1.19
