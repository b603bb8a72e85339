module gotel.bench/floor

go 1.22
