module ferret.test/burner

go 1.19
