#!/usr/bin/env bash
# Prepares the test VM, as root: two more kernels for the tests that the build machines cannot
# run on their own kernel. These machines boot in lockdown=integrity (so gotel's memory path for
# `traceparent`, bpf_probe_write_user, is refused) and /dev/kvm is not usable, so the harness
# boots Debian's own kernels (lockdown `none` without Secure Boot) under qemu's TCG emulator with
# a busybox initramfs:
#   bookworm            linux-image-6.1.0-*-amd64, the Debian 12 kernel many servers run;
#   bookworm-backports  linux-image-6.12.*-amd64 (Debian 13's kernel, backported to 12): a newer
#                       kernel, without the sockhash FIONREAD regression of the build machines'
#                       6.18, for the socket path of `traceparent`.
#
# Installs qemu-system-x86, busybox-static and kmod from Debian's packages, fetches each kernel
# .deb with `apt-get download`, unpacks vmlinuz and the few modules the guest needs to mount the
# host's root over 9p (virtio, 9p, overlay), and builds the initramfs from tools/vm/init. Cached
# under /var/cache/gotel/vm/<kernel package>/ (outside the clone); the links `bookworm` and
# `bookworm-backports` there name the ones `tools/vm/run.sh -k` boots (`current`, the default,
# is `bookworm`). Idempotent: a second run only checks. bookworm-backports must be in the apt
# sources (tools/install-deps.sh adds it).
#
#   GOTEL_VM_KERNEL=linux-image-6.1.0-56-amd64          another package for `bookworm`
#   GOTEL_VM_KERNEL_NEW=linux-image-6.12.95+deb12-amd64  another package for `bookworm-backports`
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE=/var/cache/gotel/vm
say() { echo "vm-setup: $*"; }
die() { echo "vm-setup: error: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (apt-get)"
export DEBIAN_FRONTEND=noninteractive

# ---- host packages -----------------------------------------------------------------------------
want=(qemu-system-x86 busybox-static kmod)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-cache show "${missing[@]}" >/dev/null 2>&1 || apt-get update -qq || say "warning: apt-get update reported errors"
  say "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/var/log/gotel-vm-apt.log 2>&1 \
    || { tail -20 /var/log/gotel-vm-apt.log >&2; die "apt-get install ${missing[*]} failed (log: /var/log/gotel-vm-apt.log)"; }
fi

# ---- the kernel packages -----------------------------------------------------------------------
# The linux-image-*-amd64 package that the first linux-image-amd64 whose archive matches SUITE
# and whose version matches VERSION (regexes) depends on.
meta_kernel() {
  local suite=$1 version=$2 meta
  pick() {
    apt-cache madison linux-image-amd64 | awk -F'|' -v s="$suite" -v v="$version" \
      '$3 ~ s && $2 ~ v { gsub(/ /, "", $2); print $2; exit }'
  }
  meta="$(pick)"
  if [[ -z "$meta" ]]; then
    apt-get update -qq || true
    meta="$(pick)"
  fi
  [[ -n "$meta" ]] || die "no linux-image-amd64 ($suite, $version) in the apt sources (tools/install-deps.sh adds bookworm-backports)"
  apt-cache depends "linux-image-amd64=$meta" | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1
}

# Fetches kernel package PKG into $CACHE/PKG (vmlinuz, modules, initramfs) and points the link
# NAME at it.
prepare() {
  local name=$1 pkg=$2 kver dir tmp deb mods stamp ir
  [[ "$pkg" =~ ^linux-image-([0-9][0-9a-z.+~-]*-amd64)$ ]] || die "$pkg is not a linux-image-<version>-amd64 package"
  kver="${BASH_REMATCH[1]}"
  dir="$CACHE/$pkg"
  mkdir -p "$CACHE"

  if [[ ! -f "$dir/vmlinuz" || ! -f "$dir/modules.order" ]]; then
    tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    say "apt-get download $pkg"
    # _apt cannot write into a root-only directory; the download is then done as root (a warning).
    fetch() { (cd "$tmp" && apt-get download "$pkg" 2>&1 | grep -v 'unsandboxed as root' || true); }
    fetch
    deb="$(ls "$tmp"/"$pkg"_*.deb 2>/dev/null | head -1)"
    if [[ -z "$deb" ]]; then
      # Old package lists name a kernel the archive has replaced since.
      apt-get update -qq || true
      fetch
      deb="$(ls "$tmp"/"$pkg"_*.deb 2>/dev/null | head -1)"
    fi
    [[ -n "$deb" ]] || die "apt-get download $pkg fetched nothing (apt-get update? package name?)"
    dpkg-deb -x "$deb" "$tmp/root"
    mods="$tmp/root/lib/modules/$kver"
    [[ -f "$tmp/root/boot/vmlinuz-$kver" && -d "$mods" ]] || die "$deb has no boot/vmlinuz-$kver or lib/modules/$kver"
    depmod -b "$tmp/root" "$kver"
    mkdir -p "$tmp/out/modules"
    # Load order: each module after what it needs (modprobe --show-depends), no repeats;
    # built-in ones are not listed.
    : >"$tmp/out/modules.order"
    for m in virtio_pci 9pnet_virtio 9p overlay; do
      modprobe -d "$tmp/root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
    done | while read -r ko; do
      base="$(basename "$ko")"
      base="${base%.xz}" base="${base%.zst}"
      grep -qx "$base" "$tmp/out/modules.order" && continue
      case "$ko" in
        *.ko) cp "$ko" "$tmp/out/modules/$base" ;;
        *.ko.xz) xz -dc "$ko" >"$tmp/out/modules/$base" ;;
        *.ko.zst) zstd -qdc "$ko" >"$tmp/out/modules/$base" ;;
        *) die "module $ko: unknown compression" ;;
      esac
      echo "$base" >>"$tmp/out/modules.order"
    done
    [[ -s "$tmp/out/modules.order" ]] || die "no modules found for 9p/virtio in $deb"
    cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
    echo "$kver" >"$tmp/out/release"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
    rm -rf "$tmp"
    trap - EXIT
  fi

  # The initramfs (rebuilt when tools/vm/init or busybox changes).
  stamp="$(cat "$HERE/init" /bin/busybox "$dir/modules.order" | sha256sum | cut -c1-16)"
  if [[ "$(cat "$dir/initramfs.stamp" 2>/dev/null)" != "$stamp" || ! -f "$dir/initramfs.img" ]]; then
    say "building the initramfs ($dir/initramfs.img)"
    ir="$(mktemp -d)"
    mkdir -p "$ir"/{bin,dev,proc,sys,lower,rw,newroot,modules}
    cp /bin/busybox "$ir/bin/busybox"
    cp "$HERE/init" "$ir/init"
    chmod 755 "$ir/init"
    cp "$dir"/modules/*.ko "$ir/modules/"
    cp "$dir/modules.order" "$ir/modules/order"
    (cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/initramfs.img.tmp"
    rm -rf "$ir"
    mv "$dir/initramfs.img.tmp" "$dir/initramfs.img"
    echo "$stamp" >"$dir/initramfs.stamp"
  fi
  ln -sfn "$pkg" "$CACHE/$name"
  say "ok: $name: $pkg ($(cat "$dir/release")) in $dir"
}

# Debian 12's own kernel (6.1), also when bookworm-backports is in the sources.
old="${GOTEL_VM_KERNEL:-}"
[[ -n "$old" ]] || old="$(meta_kernel ' bookworm(-security|-updates)?/' ' 6\.1\.')"
[[ -n "$old" ]] || die "Debian 12's linux-image-amd64 6.1.x names no linux-image-*-amd64 package"
prepare bookworm "$old"
ln -sfn bookworm "$CACHE/current"

new="${GOTEL_VM_KERNEL_NEW:-}"
[[ -n "$new" ]] || new="$(meta_kernel ' bookworm-backports/' '.')"
[[ -n "$new" ]] || die "bookworm-backports' linux-image-amd64 names no linux-image-*-amd64 package"
prepare bookworm-backports "$new"
