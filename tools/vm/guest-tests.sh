#!/usr/bin/env bash
# Inside the test VM: runs a list of cargo test binaries' tests, one at a time, and says for
# each whether it passed. e2e/tests/vm.rs writes the list and reads the result lines.
#
#   guest-tests.sh LIST [GOBUILD_DIR]
#
# LIST: one test a line, tab-separated: label, test executable, exact test name, lockdown level
# to raise the kernel to before the test (`-`: as it is; `integrity`: as the build machines
# boot; lockdown can be raised at run time but never lowered, so such tests come last), extra
# libtest flags (e.g. --ignored). GOBUILD_DIR: Go programs built on the host (go-prebuilt.sh),
# served to the tests' `go build`. Prints, per test, `gotel-vm-test: ok|FAILED <label> (N s)`; a test
# binary that exits 0 without running exactly that one test is FAILED too (a wrong name must not
# pass). Exits 1 when any failed.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list=$1
[[ -n "${2:-}" && -d "${2:-}" ]] && { "$HERE/go-prebuilt.sh" install "$2" || exit 1; }
failed=0
while IFS=$'\t' read -r label exe name lockdown flags; do
  [[ -z "$label" ]] && continue
  t0=$SECONDS
  if [[ $lockdown != - ]] && ! grep -q "\[$lockdown\]" /sys/kernel/security/lockdown; then
    echo "$lockdown" >/sys/kernel/security/lockdown 2>/dev/null
    grep -q "\[$lockdown\]" /sys/kernel/security/lockdown || {
      echo "gotel-vm: cannot raise lockdown to $lockdown (now: $(cat /sys/kernel/security/lockdown))"
      echo "gotel-vm-test: FAILED $label (0 s)"
      failed=1
      continue
    }
    echo "gotel-vm: lockdown raised: $(cat /sys/kernel/security/lockdown)"
  fi
  log=$(mktemp)
  # shellcheck disable=SC2086 # flags: zero or more words
  "$exe" --exact "$name" --test-threads=1 --color never --nocapture $flags 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  verdict=ok
  if [[ $rc != 0 ]]; then
    verdict=FAILED
  elif ! grep -q '^test result: ok\. 1 passed; 0 failed' "$log"; then
    verdict=FAILED
    echo "gotel-vm: $exe ran no test named $name"
  fi
  [[ $verdict == ok ]] || failed=1
  echo "gotel-vm-test: $verdict $label ($((SECONDS - t0)) s)"
  rm -f "$log"
done <"$list"
exit $failed
