module gotel.bench/builtins

go 1.21
