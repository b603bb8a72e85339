module gotel.bench/loop

go 1.22
