# Sourced by the bench scripts: repository root as the working folder, the Go toolchain (GO),
# the build folder (BUILD), `log`, and the root check every benchmark needs (uprobes).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GO="${GO:-/usr/local/go/bin/go}"
export GO
BUILD="$ROOT/bench/.build"
mkdir -p "$BUILD"
log() { echo "bench: $*" >&2; }
[[ $EUID -eq 0 ]] || { log "must run as root (uprobes)"; exit 1; }
