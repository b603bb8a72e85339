#!/usr/bin/env bash
# Runs every test of gotel, as root, on a fresh machine: installs what is missing (Docker engine,
# Go toolchains, the pinned Rust nightly, Jaeger), checks formatting and lints (rustfmt, clippy),
# builds, then runs the unit tests, the end-to-end tests against real Go programs on the real
# kernel, the Jaeger test, the docker compose test and the Kubernetes tests (manifests offline, a
# real one-node cluster: tools/k8s/). Ends with one line: "tests: N passed,
# M failed" (all suites added up; rustfmt and clippy count as one test each).
#
# GOTEL_TEST_REQUIRE_ALL=1: a test whose prerequisite is missing (root, a Go toolchain of
# tools/go-toolchains.txt) fails here, where plain `cargo test` skips it with one line.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "the tests need root (eBPF uprobes, dockerd)" >&2; exit 1; }
export GOTEL_TEST_REQUIRE_ALL=1

log=$(mktemp /tmp/gotel-test.XXXXXX)
trap 'rm -f "$log"' EXIT
failed_suites=()
suite() {  # suite NAME COMMAND...: runs one suite, keeps its output for the totals
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@" 2>&1 | tee -a "$log"; then echo "=== $name: ok ($((SECONDS - t0)) s)"
  else failed_suites+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"; fi
}

lint() {  # lint NAME COMMAND...: a check that counts as one test in the totals
  local name=$1; shift
  if "$@"; then echo "$name: 1 passed, 0 failed"; else echo "$name: 0 passed, 1 failed"; return 1; fi
}

tools/install-deps.sh || { echo "installing dependencies failed" >&2; exit 1; }
suite "formatting (rustfmt)" lint rustfmt cargo fmt --all --check
cargo build --release || { echo "build failed" >&2; exit 1; }
suite "lints (clippy)" lint clippy cargo clippy --all-targets -- -D warnings

suite "unit and end-to-end tests (cargo)" cargo test --release --no-fail-fast -- --test-threads=1
[ -x e2e/jaeger-test.sh ] && suite "jaeger (grpc and http/protobuf)" e2e/jaeger-test.sh
[ -x e2e/compose-test.sh ] && suite "docker compose demo" e2e/compose-test.sh
suite "kubernetes manifests (offline)" tools/k8s/validate.sh
# A one-node Kubernetes cluster built and started here, then removed (10-15 min; GOTEL_SKIP_K8S=1 skips).
[ "${GOTEL_SKIP_K8S:-}" = 1 ] || suite "kubernetes (one-node cluster)" env GOTEL_BIN="$PWD/target/release/gotel" tools/k8s/test.sh

# Totals: cargo's "test result: ok. N passed; M failed" and the scripts' "name: N passed, M failed".
read -r passed failed < <(awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  /^[a-z-]+: [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
  END { print p + 0, f + 0 }' "$log")
echo
if [ ${#failed_suites[@]} -gt 0 ]; then
  printf 'failed suite: %s\n' "${failed_suites[@]}"
  [ "$failed" = 0 ] && failed=${#failed_suites[@]}
fi
echo "tests: $passed passed, $failed failed"
[ ${#failed_suites[@]} = 0 ]
