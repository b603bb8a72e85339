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
build_for_bench sink propclient
exec python3 "$ROOT/bench/same_node.py" "$@"
