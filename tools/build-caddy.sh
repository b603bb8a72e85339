#!/usr/bin/env bash
# Builds Caddy (a reverse proxy nobody here wrote; 82 MB with DWARF) from the Go module proxy and
# caches it outside the repo, for tests on a large real program (e2e/tests/memory.rs). Kept
# unstripped: its DWARF is what makes attaching to it costly. Prints the binary's path on stdout
# (progress goes to stderr).
#   CADDY_VERSION    default 2.11.9
#   GOTEL_CACHE      default /var/cache/gotel
set -euo pipefail
CADDY_VERSION="${CADDY_VERSION:-2.11.9}"
CACHE="${GOTEL_CACHE:-/var/cache/gotel}"
OUT_DIR="$CACHE/caddy-$CADDY_VERSION"
OUT="$OUT_DIR/caddy"
log() { echo "build-caddy: $*" >&2; }

if [[ -x "$OUT" ]]; then
  echo "$OUT"
  exit 0
fi

# shellcheck source=tools/go-toolchains.sh
GOTEL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" . "$(dirname "${BASH_SOURCE[0]}")/go-toolchains.sh"
GO="$(default_go)" || GO=""
[[ -n "$GO" ]] || { log "no Go toolchain found (set GO=/path/to/go)"; exit 1; }

mkdir -p "$OUT_DIR"
GOPATH_TMP="$(mktemp -d "$OUT_DIR/gopath.XXXXXX")"
trap 'rm -rf "$GOPATH_TMP"' EXIT
export GOPATH="$GOPATH_TMP"
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomodcache}"
export GOCACHE="${GOTEL_GOCACHE:-$CACHE/gocache}"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
log "go install github.com/caddyserver/caddy/v2/cmd/caddy@v$CADDY_VERSION with $("$GO" version); several minutes the first time"
CGO_ENABLED=0 "$GO" install "github.com/caddyserver/caddy/v2/cmd/caddy@v$CADDY_VERSION" >&2
mv "$GOPATH_TMP/bin/caddy" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "built $OUT ($(du -h "$OUT" | cut -f1))"
echo "$OUT"
