#!/usr/bin/env bash
# gotel side by side with opentelemetry-go-instrumentation (go.opentelemetry.io/auto v0.24.0, the
# peer the issues compare with) on one net/http server under wrk: the server's CPU per request
# untraced, traced by gotel's built-in HTTP server span, and traced by the peer's net/http server
# probe; same run, interleaved rounds. Writes bench/results/peer.json and its section of
# BENCHMARKS.md (between the `peer` markers).
#
#   bench/peer.sh            5 rounds of 5 s per setup and request shape, about 4 minutes
#   bench/peer.sh --quick    2 rounds of 3 s
#
# The peer is built here from its module: its eBPF objects are not in the module (bpf2go output),
# so this needs clang-16 (installed with apt when missing) and the Go module proxy. Only its
# net/http server probe is kept (bench/peer.py says why). Needs root (uprobes), Go (GO, default
# /usr/local/go/bin/go), cargo, wrk (installed with apt when missing) and python3.
# Env: GOTEL_BIN (default target/release/gotel, built here), BENCH_SKIP_BUILD=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_wrk
build_for_bench sink serve

PEER_VERSION=v0.24.0
PEER="$BUILD/otelauto-httpserver-$PEER_VERSION"
if [[ ! -x "$PEER" ]]; then
  command -v clang-16 >/dev/null || {
    log "installing clang-16 (the peer's eBPF programs are compiled here)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang-16 >&2
  }
  log "building go.opentelemetry.io/auto $PEER_VERSION (net/http server probe only)"
  export GOFLAGS=-mod=mod GOSUMDB=off GOTOOLCHAIN=local
  dir=$("$GO" mod download -json "go.opentelemetry.io/auto@$PEER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  sdk=$("$GO" mod download -json "go.opentelemetry.io/auto/sdk@v1.2.1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  src="$BUILD/peer-src"
  rm -rf "$src"
  cp -r "$dir" "$src"
  cp -r "$sdk" "$src/sdk"  # the module's `replace go.opentelemetry.io/auto/sdk => ./sdk`
  chmod -R u+w "$src"
  python3 "$ROOT/bench/peer.py" --patch "$src/instrumentation.go"
  tools="$BUILD/peer-tools"
  mkdir -p "$tools"
  ln -sf "$(command -v clang-16)" "$tools/clang"
  ln -sf "$(command -v llvm-strip-16 || command -v llvm-strip)" "$tools/llvm-strip"
  (cd "$src" && PATH="$tools:$PATH" BPF2GO_CFLAGS="-I$src/internal/include/libbpf -I$src/internal/include" \
    "$GO" generate ./internal/pkg/instrumentation/bpf/... && "$GO" build -o "$PEER" ./cli) >&2
fi
exec python3 "$ROOT/bench/peer.py" --peer "$PEER" "$@"
