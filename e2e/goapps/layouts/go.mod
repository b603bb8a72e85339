module gotel.test/layouts

go 1.18
