#!/usr/bin/env bash
# gotel's peak memory and time to attach on one program (issue 16: a sidecar with a 128 MiB
# limit must fit). Launches the command under gotel (`gotel -- COMMAND`), waits for
# GOTEL_READY_FILE (every uprobe attached), reads gotel's VmHWM (peak RSS) and VmRSS, then stops
# it. Prints one line per run: attach ms (gotel's own log), peak RSS, RSS after attaching.
#   bench/attach-memory.sh [RUNS] -- COMMAND ARGS...
# Environment: GOTEL_BIN (default target/release/gotel), GOTEL_PROBES (default: only the
# built-in HTTP instrumentations, which need no spec), OTEL_TRACES_EXPORTER (default none).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GOTEL="${GOTEL_BIN:-$ROOT/target/release/gotel}"
RUNS=3
if [[ "${1:-}" != "--" ]]; then RUNS="$1"; shift; fi
[[ "${1:-}" == "--" ]] || { echo "usage: $0 [RUNS] -- COMMAND ARGS..." >&2; exit 2; }
shift
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export OTEL_TRACES_EXPORTER="${OTEL_TRACES_EXPORTER:-none}"
kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$2/status"; }
for run in $(seq "$RUNS"); do
  rm -f "$TMP/ready"
  GOTEL_READY_FILE="$TMP/ready" "$GOTEL" -- "$@" >/dev/null 2>"$TMP/log" &
  pid=$!
  for _ in $(seq 1200); do [[ -e "$TMP/ready" ]] || ! kill -0 "$pid" 2>/dev/null && break; sleep 0.1; done
  [[ -e "$TMP/ready" ]] || { echo "run $run: gotel did not attach:" >&2; tail -5 "$TMP/log" >&2; exit 1; }
  sleep 1
  hwm=$(kib VmHWM "$pid"); rss=$(kib VmRSS "$pid")
  ms=$(sed -n 's/.*attached.* ms=\([0-9]*\).*/\1/p' "$TMP/log" | head -1)
  kill -TERM "$pid"; wait "$pid" || true
  awk -v r="$run" -v ms="$ms" -v h="$hwm" -v s="$rss" \
    'BEGIN { printf "run %d: attached in %s ms, peak RSS %.1f MiB, RSS 1 s after attaching %.1f MiB\n", r, ms, h / 1024, s / 1024 }'
done
