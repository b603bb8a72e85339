module gotel.bench/propclient

go 1.22
