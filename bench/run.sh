#!/usr/bin/env bash
# gotel benchmarks: builds everything they need, runs every measurement and rewrites
# BENCHMARKS.md (plus bench/loss-vs-rate.svg and the raw results in bench/results/).
#
#   bench/run.sh            full run, about 8-12 minutes on 2 cores
#   bench/run.sh --quick    smaller loops, about 3-4 minutes (same figures, wider error)
#
# Needs root (uprobes), Go (GO, default /usr/local/go/bin/go), cargo, python3 and wrk
# (installed with apt-get when missing). Everything listens on 127.0.0.1 only.
# Environment: GOTEL_BIN (default target/release/gotel, built here), BENCH_BIG_BINARY (a large
# Go binary with DWARF for the startup figure; default: Jaeger rebuilt with DWARF when
# tools/build-jaeger.sh's cache is present, else a generated program), BENCH_SKIP_BUILD=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_wrk

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building gotel (release)"
  cargo build --release -p gotel >&2
  log "building the pipeline and export benches"
  cargo bench -p gotel --bench pipeline --bench export_stall --no-run 2>"$BUILD/cargo-bench.log" >&2 \
    || { cat "$BUILD/cargo-bench.log" >&2; exit 1; }
  for app in loop floor sink serve; do
    log "building bench/goapps/$app"
    (cd "bench/goapps/$app" && "$GO" build -o "$BUILD/$app" .) >&2
  done
fi
# The bench executable cargo just built (newest pipeline-* in target/release/deps).
PIPELINE_BENCH="$(ls -t "$ROOT"/target/release/deps/pipeline-* 2>/dev/null | grep -v '\.d$' | head -1)"
EXPORT_STALL_BENCH="$(ls -t "$ROOT"/target/release/deps/export_stall-* 2>/dev/null | grep -v '\.d$' | head -1)"
export PIPELINE_BENCH EXPORT_STALL_BENCH

# A large Go binary with full DWARF for the startup figure.
if [[ -z "${BENCH_BIG_BINARY:-}" ]]; then
  JAEGER_SRC="${GOTEL_CACHE:-/var/cache/gotel}/jaeger-${JAEGER_VERSION:-1.76.0}/src"
  if [[ -x "$BUILD/jaeger-dwarf" ]]; then
    BENCH_BIG_BINARY="$BUILD/jaeger-dwarf"
  elif [[ -f "$JAEGER_SRC/go.mod" ]]; then
    log "rebuilding Jaeger with DWARF from tools/build-jaeger.sh's cache"
    CACHE="${GOTEL_CACHE:-/var/cache/gotel}"
    (cd "$JAEGER_SRC" && GOPATH="$CACHE/gopath" GOMODCACHE="$CACHE/gomodcache" GOCACHE="$CACHE/gocache" \
      GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 \
      "$GO" build -trimpath -o "$BUILD/jaeger-dwarf" github.com/jaegertracing/jaeger/cmd/jaeger) >&2 \
      && BENCH_BIG_BINARY="$BUILD/jaeger-dwarf"
  fi
  if [[ -z "${BENCH_BIG_BINARY:-}" ]]; then
    if [[ ! -x "$BUILD/bigbin" ]]; then
      log "generating and building a large Go program (bench/goapps/bigbin)"
      rm -rf "$BUILD/bigbin-src" && mkdir -p "$BUILD/bigbin-src"
      (cd bench/goapps/bigbin && "$GO" run . -out "$BUILD/bigbin-src") >&2
      (cd "$BUILD/bigbin-src" && "$GO" build -o "$BUILD/bigbin" .) >&2
    fi
    BENCH_BIG_BINARY="$BUILD/bigbin"
  fi
fi
export BENCH_BIG_BINARY

exec python3 "$ROOT/bench/run.py" "$@"
