#!/usr/bin/env bash
# Builds a real Go program nobody here wrote from the Go module proxy and caches it OUTSIDE the
# clone (so a second clone, a CI job on the same machine or `git clean` does not rebuild it), for
# end-to-end tests on third-party code. Kept unstripped: their DWARF is part of what is tested.
# tools/install-deps.sh builds both once per machine; the tests call this too (a cache hit).
# Prints the binary's path on stdout (progress goes to stderr).
#
#   tools/build-thirdparty.sh caddy     Caddy (reverse proxy; 82 MB with DWARF): e2e/tests/memory.rs.
#                                       About 12 minutes cold on 2 CPUs, most of it compiling.
#   tools/build-thirdparty.sh httpbin   go-httpbin (HTTP test server, 13 MB; 76 s cold):
#                                       e2e/tests/thirdparty.rs.
#
#   CADDY_VERSION    default 2.11.9
#   HTTPBIN_VERSION  default 2.26.0
#   GOTEL_CACHE      default /var/cache/gotel (module and build caches live there too)
set -euo pipefail
CACHE="${GOTEL_CACHE:-/var/cache/gotel}"
log() { echo "build-thirdparty: $*" >&2; }

case "${1:-}" in
  caddy) NAME=caddy VERSION="${CADDY_VERSION:-2.11.9}" PKG=github.com/caddyserver/caddy/v2/cmd/caddy ;;
  httpbin) NAME=go-httpbin VERSION="${HTTPBIN_VERSION:-2.26.0}" PKG=github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin ;;
  *) log "usage: $0 caddy|httpbin"; exit 2 ;;
esac
OUT_DIR="$CACHE/$NAME-$VERSION"
OUT="$OUT_DIR/$NAME"
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
log "go install $PKG@v$VERSION with $("$GO" version)"
CGO_ENABLED=0 "$GO" install "$PKG@v$VERSION" >&2
mv "$GOPATH_TMP/bin/$NAME" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "built $OUT ($(du -h "$OUT" | cut -f1))"
echo "$OUT"
