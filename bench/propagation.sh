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
build_for_bench sink propclient
exec python3 "$ROOT/bench/propagation.py" "$@"
