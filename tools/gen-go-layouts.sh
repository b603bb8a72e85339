#!/bin/sh
# Regenerates sidecar/src/go_layouts.json: builds e2e/goapps/layouts with every Go release this
# machine has (Debian's golang-1.XX, /usr/local/go, and the go1.27.3 toolchain download) and
# reads the field offsets the built-in instrumentations declare from each build's DWARF (gotel-layouts).
# The unit test go_layouts::tests::table_matches_dwarf_of_every_installed_go checks the result.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
GOTOOLCHAIN=go1.27.3 /usr/local/go/bin/go version >/dev/null 2>&1 || echo "gen-go-layouts: go1.27.3 toolchain not available (skipped)" >&2
cargo build --release -q -p gotel --bin gotel-layouts --manifest-path "$root/Cargo.toml"
bins=""
for go in /usr/lib/go-1.*/bin/go /usr/local/go/bin/go "$(go env GOMODCACHE 2>/dev/null || echo /root/go/pkg/mod)"/golang.org/toolchain@v0.0.1-go1.*.linux-amd64/bin/go; do
  [ -x "$go" ] || continue
  n=$(echo "$go" | md5sum | cut -c1-8)
  (cd "$root/e2e/goapps/layouts" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -o "$out/layouts-$n" .)
  bins="$bins $out/layouts-$n"
done
# shellcheck disable=SC2086
"${CARGO_TARGET_DIR:-$root/target}/release/gotel-layouts" $bins > "$out/table.json"
mv "$out/table.json" "$root/sidecar/src/go_layouts.json"
echo "gen-go-layouts: wrote sidecar/src/go_layouts.json" >&2
