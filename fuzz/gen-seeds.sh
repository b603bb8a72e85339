#!/bin/sh
# Builds the real Go binaries the binary fuzz targets start from (not committed: megabytes):
#   seeds/bin/hello-normal    go build                     (.symtab, DWARF, .gopclntab)
#   seeds/bin/hello-stripped  go build -ldflags='-s -w'    (.gopclntab only)
#   seeds/bin/hello-pie       go build -buildmode=pie      (.data.rel.ro.gopclntab)
# and, for binary_open, seeds/bin/open/: each of those plus small cut-down ELF files.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
out="$here/seeds/bin"
mkdir -p "$out/open"
cd "$here/seeds/hello"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
"$GO" build -o "$out/hello-normal" .
"$GO" build -ldflags='-s -w' -o "$out/hello-stripped" .
"$GO" build -buildmode=pie -o "$out/hello-pie" .
cp "$out/hello-normal" "$out/hello-stripped" "$out/hello-pie" "$out/open/"
# Smaller ELF files that still hold Go's tables (objcopy keeps the ELF structure).
objcopy --only-section=.gopclntab --only-section=.go.buildinfo \
    "$out/hello-stripped" "$out/open/pclntab-buildinfo.elf" 2>/dev/null || true
objcopy --only-section=.go.buildinfo --only-section=.symtab --only-section=.strtab \
    "$out/hello-normal" "$out/open/buildinfo-symtab.elf" 2>/dev/null || true
head -c 4096 "$out/hello-stripped" > "$out/open/head-4k"
ls -la "$out" "$out/open"
