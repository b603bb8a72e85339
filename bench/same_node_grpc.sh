#!/usr/bin/env bash
# What join.same_node costs a traced gRPC client: microseconds per unary call of
# e2e/goapps/grpcsvc traced by gotel in node mode with the unit off vs on, same run; writes
# bench/results/same_node_grpc.json and its part of BENCHMARKS.md ("Built-in gRPC hooks").
#
#   bench/same_node_grpc.sh            5 rounds of 5000 calls per setup, about 2 minutes
#   bench/same_node_grpc.sh --quick    2 rounds of 2000 calls
#
# Needs root (uprobes), Go (GO, default /usr/local/go/bin/go), cargo and python3.
# Env: GOTEL_BIN (default target/release/gotel, built here), BENCH_SKIP_BUILD=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_for_bench sink
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building e2e/goapps/grpcsvc"
  (cd e2e/goapps/grpcsvc && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -o "$BUILD/grpcsvc" .) >&2
fi
exec python3 "$ROOT/bench/same_node_grpc.py" "$@"
