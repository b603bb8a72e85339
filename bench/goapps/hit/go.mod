module gotel.bench/hit

go 1.21
