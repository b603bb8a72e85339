module wrappers

go 1.19
