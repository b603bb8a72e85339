#!/bin/sh
# Adds the grpc-go layouts (and those of the genproto module its status type comes from) of every
# version in tools/grpc-versions.txt to sidecar/src/go_layouts.json: builds e2e/goapps/grpcsvc
# once per version (a copy whose go.mod requires it; modules from the Go module proxy) with the
# default Go toolchain, and gotel-layouts --modules reads the declared fields' offsets from each
# build's DWARF, keyed by the exact versions the build info names. Entries of other versions are
# kept. The unit test go_layouts::tests::grpc_layouts_match_dwarf checks the default version.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
GOTEL_ROOT="$root" . "$root/tools/go-toolchains.sh"
go=$(default_go)
cargo build --release -q -p gotel --bin gotel-layouts --manifest-path "$root/Cargo.toml"
bins=""
for v in $(grep -v '^#' "$root/tools/grpc-versions.txt" | awk '{print $1}'); do
  rm -rf "$out/src" && cp -r "$root/e2e/goapps/grpcsvc" "$out/src"
  (cd "$out/src" && export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod &&
    "$go" mod edit -require="google.golang.org/grpc@$v" && "$go" build -o "$out/grpcsvc-$v" .)
  bins="$bins $out/grpcsvc-$v"
done
# shellcheck disable=SC2086
"${CARGO_TARGET_DIR:-$root/target}/release/gotel-layouts" --modules $bins > "$out/table.json"
mv "$out/table.json" "$root/sidecar/src/go_layouts.json"
echo "gen-grpc-layouts: wrote sidecar/src/go_layouts.json" >&2
