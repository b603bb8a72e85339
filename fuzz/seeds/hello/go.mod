module gotel.fuzz/hello

go 1.22
