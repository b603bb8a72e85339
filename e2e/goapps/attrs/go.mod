module gotel.test/attrs

go 1.19
