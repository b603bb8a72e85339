module gotel.test/h2svc

go 1.24
