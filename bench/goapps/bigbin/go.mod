module gotel.bench/bigbin

go 1.22
