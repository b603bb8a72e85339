#!/usr/bin/env bash
# Runs one command inside the test VM (Debian's kernel under qemu TCG; see tools/vm/setup.sh) and
# exits with the command's exit status.
#
#   tools/vm/run.sh [-k KERNEL] [-t SECONDS] [-m MiB] [-c CPUS] [-a KERNEL_ARGS] [-o DIR] -- COMMAND [ARG...]
#
# The guest sees the host's whole filesystem read-only over 9p, under a tmpfs overlay (writes
# stay in the guest), so COMMAND runs unchanged: same path, same working directory, same
# environment (exported variables). Its output and the guest's console are copied to stdout.
# -k names the kernel, a link in /var/cache/gotel/vm made by setup.sh: `bookworm` (Debian 12's
# 6.1, the default) or `bookworm-backports` (6.12).
# -t bounds the command (default 600 s; the VM itself gets 60 s more for boot and power-off);
# -a adds to the kernel's command line (e.g. `lockdown=integrity`, as the build machines boot);
# -o keeps the exchange directory (cmd, rc, console.log) in DIR instead of a temporary one.
# GOTEL_VM_CPU (environment) sets qemu's CPU model (default `max`; e.g. `max,la57=off` for
# 4-level paging). GOTEL_VM_TCG sets TCG's threading (default `single`; `multi`: one host thread
# per vCPU, see below why not).
# Exit status: COMMAND's, 124 when it timed out, 125 when the VM gave no result (boot failure,
# qemu error: the console shows why).
set -uo pipefail
CACHE=/var/cache/gotel/vm
die() { echo "vm-run: error: $*" >&2; exit 125; }

timeout=600 mem=2048 cpus=2 io="" kargs="" kernel=bookworm
while getopts "k:t:m:c:a:o:" opt; do
  case $opt in
    k) kernel=$OPTARG ;;
    t) timeout=$OPTARG ;;
    m) mem=$OPTARG ;;
    c) cpus=$OPTARG ;;
    a) kargs=$OPTARG ;;
    o) io=$OPTARG ;;
    *) die "usage: tools/vm/run.sh [-k KERNEL] [-t SECONDS] [-m MiB] [-c CPUS] [-a KERNEL_ARGS] [-o DIR] -- COMMAND [ARG...]" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -gt 0 ]] || die "no command (usage: tools/vm/run.sh [options] -- COMMAND [ARG...])"
[[ $(id -u) -eq 0 ]] || die "run as root (the guest shares the host's root filesystem)"
kdir="$CACHE/$kernel"
[[ -f $kdir/vmlinuz && -f $kdir/initramfs.img ]] || die "no VM kernel $kernel in $CACHE: run tools/vm/setup.sh (tools/install-deps.sh does)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run tools/vm/setup.sh"

if [[ -n $io ]]; then
  mkdir -p "$io" && rm -f "$io/rc" "$io/console.log"
else
  io="$(mktemp -d /tmp/gotel-vm.XXXXXX)"
  trap 'rm -rf "$io"' EXIT
fi
{
  export -p | grep -vE '^declare -x (BASH_|SHLVL=|OLDPWD=|_=)'
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$io/cmd"
echo "$timeout" >"$io/timeout"

# TCG: /dev/kvm here is not usable (PVM). Single-threaded TCG (the vCPUs take turns on one host
# thread): with multi-threaded TCG (qemu 7.2, Debian 12's), a vCPU sometimes runs a stale
# translation of a uprobe XOL slot that the kernel has since rewritten on the other vCPU for
# another probe, so a traced program dies of SIGSEGV (its pc = the stale instruction's result
# plus the new probe's XOL correction). Measured with plain tracefs uprobes (no gotel) on a Go
# loop probed at one function's entry and RETs (tools/vm/xol-check.sh): 22 of 22 runs crashed
# with `thread=multi` (6.1 and 6.12, 5-level paging on and off), 0 of 11 with `thread=single`
# (6.1 and 6.12), 0 of 4 with one vCPU, 0 of 8 with entry or RET probes alone (slots then always
# hold the same bytes), 0 of 11 on real hardware (6.18). qemu 10.0.2 (bookworm-backports) with
# `thread=multi`: 2 of 12. Single-threaded TCG was not slower here (engine tests' boot 39-54 s
# against 60-68 s multi-threaded, on 2 shared cores).
# panic=-1 and -no-reboot: a guest that dies powers the VM off instead of looping.
start=$SECONDS
timeout -k 5 $((timeout + 60)) qemu-system-x86_64 \
  -accel "tcg,thread=${GOTEL_VM_TCG:-single}" -cpu "${GOTEL_VM_CPU:-max}" -smp "$cpus" -m "$mem" \
  -nographic -no-reboot -nic none \
  -kernel "$kdir/vmlinuz" -initrd "$kdir/initramfs.img" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init $kargs" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$io,mount_tag=gotelio,security_model=none,multidevs=remap" \
  </dev/null 2>&1 | tr -d '\r' | tee "$io/console.log"
qemu_rc=${PIPESTATUS[0]}
if [[ -f $io/rc ]]; then
  rc=$(cat "$io/rc")
  echo "vm-run: exit $rc after $((SECONDS - start)) s (boot, command and power-off)"
  exit "$rc"
fi
[[ $qemu_rc == 124 ]] && { echo "vm-run: error: the VM did not finish within $((timeout + 60)) s" >&2; exit 124; }
die "the VM gave no result (qemu exit $qemu_rc); console above"
