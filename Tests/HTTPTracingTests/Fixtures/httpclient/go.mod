module ferret.test/httpclient

go 1.19
