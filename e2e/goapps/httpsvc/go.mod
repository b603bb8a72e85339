module gotel.test/httpsvc

go 1.22
