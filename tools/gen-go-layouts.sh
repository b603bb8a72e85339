#!/bin/sh
# Regenerates sidecar/src/go_layouts.json: builds e2e/goapps/layouts with every Go release this
# machine has of tools/go-toolchains.txt (missing ones are named and skipped) and
# reads the field offsets the built-in instrumentations declare from each build's DWARF (gotel-layouts).
# Third-party modules whose versions need a newer Go than the oldest listed (pgx v5, go-redis v9)
# are read from e2e/goapps/dbsvc, built once with the default toolchain (a module's layout is
# keyed by its version, not by the Go release); its go.mod names the module versions.
# The unit test go_layouts::tests::table_matches_dwarf_of_every_installed_go checks the result.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
GOTEL_ROOT="$root" . "$root/tools/go-toolchains.sh"
cargo build --release -q -p gotel --bin gotel-layouts --manifest-path "$root/Cargo.toml"
bins=""
for go in $(go_toolchains); do
  [ -x "$go" ] || { echo "gen-go-layouts: $go not installed (skipped; tools/install-deps.sh installs it)" >&2; continue; }
  n=$(echo "$go" | md5sum | cut -c1-8)
  (cd "$root/e2e/goapps/layouts" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -o "$out/layouts-$n" .)
  bins="$bins $out/layouts-$n"
done
go=$(default_go)
(cd "$root/e2e/goapps/dbsvc" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -o "$out/dbsvc" .)
bins="$bins $out/dbsvc"
# shellcheck disable=SC2086
"${CARGO_TARGET_DIR:-$root/target}/release/gotel-layouts" $bins > "$out/table.json"
mv "$out/table.json" "$root/sidecar/src/go_layouts.json"
echo "gen-go-layouts: wrote sidecar/src/go_layouts.json" >&2
