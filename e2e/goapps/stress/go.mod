module gotel.test/stress

go 1.22
