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
# Unless BENCH_SKIP_BUILD=1: gotel (release, unless GOTEL_BIN names a build) and the Go programs
# named (bench/goapps/<app> -> $BUILD/<app>, static, with the local toolchain).
build_for_bench() {
  [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]] || return 0
  if [[ -z "${GOTEL_BIN:-}" ]]; then
    log "building gotel (release)"
    cargo build --release -p gotel >&2
  fi
  local app
  for app in "$@"; do
    log "building bench/goapps/$app"
    (cd "bench/goapps/$app" && GOTOOLCHAIN=local CGO_ENABLED=0 "$GO" build -o "$BUILD/$app" .) >&2
  done
}
# wrk, installed with apt when missing (bench/run.sh and bench/peer.sh load servers with it).
need_wrk() {
  command -v wrk >/dev/null && return 0
  log "installing wrk"
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } ||
    { log "wrk is missing and could not be installed (apt-get install wrk)"; exit 1; }
}
