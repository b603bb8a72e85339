#!/usr/bin/env bash
# What join.same_node costs a traced HTTP client: requests/s of bench/goapps/propclient traced by
# gotel in node mode with the unit off vs on, same run; writes bench/results/same_node.json and its
# section of BENCHMARKS.md.
#
#   bench/same_node.sh            5 rounds of 5 s per setup, about 2 minutes
#   bench/same_node.sh --quick    2 rounds of 3 s
#
# Needs root (uprobes), Go (GO, default /usr/local/go/bin/go), cargo and python3.
# Env: GOTEL_BIN (default target/release/gotel, built here), BENCH_SKIP_BUILD=1.
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
exec python3 "$ROOT/bench/same_node.py" "$@"
