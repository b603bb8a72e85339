module gotel.test/engine

go 1.19
