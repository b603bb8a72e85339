module gotel.bench/sink

go 1.22
