module ferret.example/symprog

go 1.19
