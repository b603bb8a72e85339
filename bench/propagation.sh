#!/usr/bin/env bash
# The propagation benchmark: requests/s and latency of a traced HTTP client with
# GOTEL_PROPAGATION=inject on vs off, same run; writes bench/results/propagation.json and section 6
# of BENCHMARKS.md.
#
#   bench/propagation.sh            5 rounds of 5 s per setup, about 2 minutes
#   bench/propagation.sh --quick    2 rounds of 3 s
#
# Needs root (uprobes, cgroup programs), cgroup v2, Go (GO, default /usr/local/go/bin/go), cargo and
# python3. Env: GOTEL_BIN (default target/release/gotel, built here), BENCH_SKIP_BUILD=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  if [[ -z "${GOTEL_BIN:-}" ]]; then
    log "building gotel (release)"
    cargo build --release -p gotel >&2
  fi
  for app in sink propclient; do
    log "building bench/goapps/$app"
    (cd "bench/goapps/$app" && GOTOOLCHAIN=local CGO_ENABLED=0 "$GO" build -o "$BUILD/$app" .) >&2
  done
fi
exec python3 "$ROOT/bench/propagation.py" "$@"
