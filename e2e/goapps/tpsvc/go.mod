module gotel.test/tpsvc

go 1.22
