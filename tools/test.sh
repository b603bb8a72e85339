#!/usr/bin/env bash
# Runs every test of gotel, as root, on a fresh machine: installs what is missing (Docker engine,
# Go toolchains, the pinned Rust nightly, Jaeger), builds, then runs the unit tests, the
# end-to-end tests against real Go programs and the real kernel, the Jaeger test and the
# docker compose test. Prints one closing line: "tests: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "tests need root (eBPF uprobes, dockerd)" >&2; exit 1; }

passed=0; failed=0; failures=()
step() {  # step NAME COMMAND...: runs a suite, counts it
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"; fi
}

tools/install-deps.sh || { echo "installing dependencies failed" >&2; exit 1; }
cargo build --release --workspace || { echo "build failed" >&2; exit 1; }

step "unit and end-to-end tests (cargo)" cargo test --release --workspace -- --test-threads=1
[ -x e2e/jaeger-test.sh ] && step "jaeger (grpc and http/protobuf)" e2e/jaeger-test.sh
[ -x e2e/compose-test.sh ] && step "docker compose demo" e2e/compose-test.sh

echo
[ ${#failures[@]} -gt 0 ] && printf 'failed suite: %s\n' "${failures[@]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
