#!/bin/sh
# Runs every fuzz target for ${FUZZ_SECONDS:-20} s on its corpus (for CI; optional).
# SANITIZER=none (default: address) trades AddressSanitizer for ~4x the executions.
# Needs the pinned nightly and cargo-fuzz:
#   rustup toolchain install nightly-2026-05-20 -c rust-src && cargo install cargo-fuzz
# The binary targets start from real Go binaries built by gen-seeds.sh (needs go).
# Exits non-zero on the first target that crashes; the input is left in fuzz/artifacts/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
NIGHTLY=${NIGHTLY:-nightly-2026-05-20}
SECS=${FUZZ_SECONDS:-20}
SAN=${SANITIZER:-address}
[ -f fuzz/seeds/bin/hello-normal ] || fuzz/gen-seeds.sh >/dev/null
cargo +"$NIGHTLY" fuzz build -O -s "$SAN"
run() {
    target=$1 maxlen=$2; shift 2  # then: extra read-only corpus dirs
    echo "== $target (${SECS}s)"
    # Fuzz into a scratch copy so a CI run does not grow the committed corpus.
    tmp=$(mktemp -d)
    cp -r "fuzz/corpus/$target/." "$tmp/" 2>/dev/null || true
    set +e
    cargo +"$NIGHTLY" fuzz run -O -s "$SAN" "$target" "$tmp" "$@" -- -max_len="$maxlen" \
        -max_total_time="$SECS" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 >"$tmp.log" 2>&1
    status=$?
    set -e
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|SUMMARY)' "$tmp.log" || true
    rm -rf "$tmp"
    if [ "$status" != 0 ]; then
        tail -n 60 "$tmp.log"
        echo "$target: failed (exit $status); the input is in fuzz/artifacts/$target/"
        exit 1
    fi
    rm -f "$tmp.log"
}
run spec 512
run values 1024
run dwarf 65536
run binary_patch 4096
run binary_open 4194304 fuzz/seeds/bin/open
echo "fuzz smoke: every target ran ${SECS}s without a crash"
