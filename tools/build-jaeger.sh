#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one `jaeger` binary) from the Go module proxy as a static binary
# and caches it outside the repo. Prints the binary's path on stdout (progress goes to stderr).
#   JAEGER_VERSION   default 1.76.0 (Jaeger v2 is published as module versions v1.x of cmd/jaeger)
#   GOTEL_CACHE      default /var/cache/gotel
set -euo pipefail
JAEGER_VERSION="${JAEGER_VERSION:-1.76.0}"
CACHE="${GOTEL_CACHE:-/var/cache/gotel}"
OUT_DIR="$CACHE/jaeger-$JAEGER_VERSION"
OUT="$OUT_DIR/jaeger"
log() { echo "build-jaeger: $*" >&2; }

if [[ -x "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi

# Jaeger 1.76 needs a recent Go: the default toolchain, else the newest one installed.
# shellcheck source=tools/go-toolchains.sh
GOTEL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" . "$(dirname "${BASH_SOURCE[0]}")/go-toolchains.sh"
GO="$(default_go)" || GO=""
[[ -n "$GO" ]] || { log "no Go toolchain found (set GO=/path/to/go)"; exit 1; }

SRC="$OUT_DIR/src"
mkdir -p "$SRC"
export GOPATH="${GOPATH:-$CACHE/gopath}"
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomodcache}"
export GOCACHE="${GOTEL_GOCACHE:-$CACHE/gocache}"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
# Newer Go toolchains requested by Jaeger's go.mod are fetched through the module proxy.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
cd "$SRC"
if [[ ! -f go.mod ]]; then
  "$GO" mod init gotel.local/jaeger-tools >&2
fi
log "fetching github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION with $("$GO" version)"
"$GO" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION" >&2
log "building static binary (CGO_ENABLED=0); this takes several minutes the first time"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags="-s -w" -o "$OUT.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
mv "$OUT.tmp" "$OUT"
log "built $OUT ($(du -h "$OUT" | cut -f1))"
echo "$OUT"
