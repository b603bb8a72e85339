module gotel.test/propagation

go 1.22
