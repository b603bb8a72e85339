#!/usr/bin/env bash
# Checks that the test VM runs uprobed programs correctly: a Go loop whose function main.work is
# probed at its entry and at its RETs with plain tracefs uprobes (no gotel, no BPF), run ROUNDS
# times in one boot. A traced program that dies is the emulator's fault, not gotel's.
#
#   tools/vm/xol-check.sh [-k KERNEL] [-n ROUNDS] [-s SECONDS]
#
# Why: with qemu 7.2's multi-threaded TCG a vCPU sometimes runs a stale translation of a uprobe
# XOL slot that the kernel has since rewritten on the other vCPU for another probe (an entry's
# instruction where a RET was, or the reverse), and the traced program dies of SIGSEGV (its pc =
# the stale instruction's result plus the new probe's XOL correction). The entry and RET probes
# of one function on a program busy on both vCPUs make different instructions share slots within
# seconds. `GOTEL_VM_TCG=multi tools/vm/xol-check.sh` shows it (every round crashed, measured on
# 6.1 and 6.12); run.sh's default, single-threaded TCG, does not (README, "Tests on other
# kernels"). Environment as for run.sh (GOTEL_VM_TCG, GOTEL_VM_CPU); GO: the go command (default
# `go`). Exit status: 0 when every round ended normally, 1 when one crashed, else run.sh's.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ ${1:-} == guest ]]; then
  # Inside the VM: guest BIN SECONDS ROUNDS OFFSET...
  bin=$2 secs=$3 rounds=$4
  shift 4
  T=/sys/kernel/tracing
  n=0
  for off in "$@"; do
    n=$((n + 1))
    echo "p:xolcheck/p$n $bin:$off" >>$T/uprobe_events || { echo "xol-check: cannot add uprobe $bin:$off"; exit 2; }
  done
  echo 1 >$T/events/xolcheck/enable
  echo 0 >$T/tracing_on # hits are counted in uprobe_profile; no need to record them
  crashed=0
  for i in $(seq 1 "$rounds"); do
    out=$("$bin" "$secs" 2>&1)
    rc=$?
    if [[ $rc != 0 ]]; then
      crashed=$((crashed + 1))
      echo "$out" | grep -m3 -E '^(unexpected|fatal|\[signal)'
    fi
    echo "xol-check: round $i: exit $rc"
  done
  echo "xol-check: probe hits: $(awk '{s += $3} END {print s}' $T/uprobe_profile)"
  echo "xol-check: $crashed of $rounds rounds crashed (kernel $(uname -r), $(nproc) CPUs)"
  [[ $crashed == 0 ]]
  exit
fi

kernel=bookworm rounds=4 secs=10
while getopts "k:n:s:" opt; do
  case $opt in
    k) kernel=$OPTARG ;;
    n) rounds=$OPTARG ;;
    s) secs=$OPTARG ;;
    *) echo "usage: tools/vm/xol-check.sh [-k KERNEL] [-n ROUNDS] [-s SECONDS]" >&2; exit 125 ;;
  esac
done
dir="$(mktemp -d /tmp/gotel-xol-check.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
cat >"$dir/main.go" <<'EOF'
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var sink atomic.Int64

// work has an entry and two RETs; the allocation keeps the garbage collector busy.
//
//go:noinline
func work(n int) int {
	if n%7 == 0 {
		b := make([]byte, 256+n%512)
		b[0] = byte(n)
		return int(b[0]) + 1
	}
	return n * 3
}

func main() {
	secs, _ := strconv.Atoi(os.Args[1])
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 2*runtime.NumCPU(); g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				sink.Add(int64(work(i + g)))
			}
		}(g)
	}
	wg.Wait()
	fmt.Println("done")
}
EOF
printf 'module xolcheck\n\ngo 1.21\n' >"$dir/go.mod"
go=${GO:-go}
(cd "$dir" && GOTOOLCHAIN=local CGO_ENABLED=0 "$go" build -o loop .) || { echo "xol-check: go build failed" >&2; exit 125; }
# File offsets of main.work's first instruction and of its RETs (tracefs wants file offsets):
# address minus the executable segment's address plus its file offset (without readelf: Go's
# linux/amd64 layout, that segment at 0x400000 from offset 0).
seg_off=0 seg_addr=0x400000
if command -v readelf >/dev/null; then
  read -r seg_off seg_addr < <(readelf -lW "$dir/loop" | awk '$1 == "LOAD" && / R E / {print $2, $3; exit}')
fi
offsets=""
while read -r addr; do
  offsets+=" $(printf '0x%x' $((addr - seg_addr + seg_off)))"
done < <("$go" tool objdump -s '^main\.work$' "$dir/loop" | awk '$2 ~ /^0x/ && (!n++ || $4 == "RET") {print $2}')
[[ $(wc -w <<<"$offsets") -ge 2 ]] || { echo "xol-check: main.work's entry and RETs not found" >&2; exit 125; }
# shellcheck disable=SC2086 # offsets: one word each
"$HERE/run.sh" -k "$kernel" -t $((rounds * (secs + 30) + 60)) -- "$HERE/xol-check.sh" guest "$dir/loop" "$secs" "$rounds" $offsets
