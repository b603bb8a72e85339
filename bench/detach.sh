#!/bin/bash
# Attach and detach times of gotel's uprobes, uprobe_multi links against perf events:
# the table of BENCHMARKS.md "Attaching and detaching". Runs the ignored e2e test
# `bench_attach_detach` (e2e/tests/detach.rs) against a generated Go program (four uprobes per
# function). DETACH_BENCH=mode:counts;... chooses the runs (mode on = uprobe_multi, off = perf
# events); perf events take ~0.12 s per uprobe to detach, so the default stops at 500.
# Needs root; GOTEL_BIN (default: target/release/gotel, build it first).
set -euo pipefail
cd "$(dirname "$0")/.."
export DETACH_BENCH="${DETACH_BENCH:-on:200,2000,10000;off:200,500}"
uname -r
exec cargo test --release -p gotel-e2e --test detach bench_attach_detach -- --ignored --test-threads=1 --nocapture
