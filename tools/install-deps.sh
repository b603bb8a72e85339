#!/usr/bin/env bash
# Installs everything gotel's builds and tests need on a fresh Debian 12 (bookworm) machine, as
# root. Idempotent: a second run only checks and prints "ok" lines.
#   - apt: docker.io, docker-compose, iproute2, curl, jq, libssl-dev (reqwest's TLS), postgresql
#     and redis-server (the database tests start their own servers on loopback), and the Go toolchains of
#     tools/go-toolchains.txt (golang-1.XX-go; bookworm-backports is added to the sources if missing)
#   - Rust: the stable toolchain of rust-toolchain.toml and the eBPF nightly pinned in
#     sidecar/build.rs, with rust-src and llvm-tools
#   - tracefs mounted at /sys/kernel/tracing
#   - dockerd running (log: /var/log/gotel-dockerd.log)
#   - the test VM (e2e/tests/vm.rs): qemu-system-x86, busybox-static, kmod, and Debian 12's
#     6.1 and bookworm-backports' 6.12 kernels with their initramfs in /var/cache/gotel/vm
#     (tools/vm/setup.sh)
#   - the third-party Go programs of the e2e tests, built once from the module proxy into
#     /var/cache/gotel (outside the clone; tools/build-thirdparty.sh): go-httpbin (seconds) and
#     Caddy (about 12 minutes on 2 CPUs the first time, nothing after)
# Skip parts with GOTEL_SKIP_DOCKER=1, GOTEL_SKIP_GO=1, GOTEL_SKIP_RUST=1, GOTEL_SKIP_VM=1 or
# GOTEL_SKIP_THIRDPARTY=1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "install-deps: $*"; }
die() { echo "install-deps: error: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (apt-get, mount and dockerd need it)"
export DEBIAN_FRONTEND=noninteractive

# ---- apt packages ----------------------------------------------------------------------------
want=(iproute2 curl jq ca-certificates libcap2-bin util-linux libssl-dev pkg-config postgresql redis-server)
[[ "${GOTEL_SKIP_DOCKER:-}" == 1 ]] || want+=(docker.io docker-compose)
# shellcheck source=tools/go-toolchains.sh
GOTEL_ROOT="$ROOT" . "$ROOT/tools/go-toolchains.sh"
[[ "${GOTEL_SKIP_GO:-}" == 1 ]] || mapfile -t -O "${#want[@]}" want < <(go_installs apt)
[[ "${GOTEL_SKIP_VM:-}" == 1 ]] || want+=(qemu-system-x86 busybox-static kmod)
# deploy/kubernetes/ validated offline (kubernetes-validate in a venv, below) and the one-node
# cluster of tools/k8s/test.sh (containerd, runc, kubectl, iptables, openssl; Kubernetes itself
# is built from the Go module proxy by tools/k8s/build.sh).
if [[ "${GOTEL_SKIP_K8S:-}" != 1 ]]; then
  want+=(python3-venv containerd runc iptables openssl)
  command -v kubectl >/dev/null || want+=(kubernetes-client)   # Debian's kubectl
fi

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  say "adding bookworm-backports to /etc/apt/sources.list.d/bookworm-backports.list"
  echo 'deb http://deb.debian.org/debian bookworm-backports main' \
    > /etc/apt/sources.list.d/bookworm-backports.list
  rm -f /var/lib/gotel/apt-updated
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  mkdir -p /var/lib/gotel
  if [[ ! -f /var/lib/gotel/apt-updated ]] || ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    say "apt-get update"
    apt-get update -qq || say "warning: apt-get update reported errors (continuing)"
    touch /var/lib/gotel/apt-updated
  fi
  say "apt-get install ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/var/log/gotel-apt.log 2>&1 \
    || { tail -20 /var/log/gotel-apt.log >&2; die "apt-get install failed (log: /var/log/gotel-apt.log)"; }
else
  say "ok: apt packages (${want[*]})"
fi

# ---- Rust toolchains -------------------------------------------------------------------------
if [[ "${GOTEL_SKIP_RUST:-}" != 1 ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  command -v rustup >/dev/null || die "rustup not found (expected in ~/.cargo/bin); it is not a Debian 12 package"
  stable="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$ROOT/rust-toolchain.toml")"
  nightly="$(sed -n 's/^const EBPF_NIGHTLY: &str = "\(.*\)";/\1/p' "$ROOT/sidecar/build.rs")"
  nightly="${nightly:-nightly-2026-05-20}"
  installed="$(rustup toolchain list)"
  if [[ -n "$stable" ]] && ! grep -q "^$stable" <<<"$installed"; then
    say "rustup toolchain install $stable"
    rustup toolchain install "$stable" --profile minimal -c clippy -c rustfmt
  fi
  if ! grep -q "^$nightly" <<<"$installed" \
     || ! rustup component list --installed --toolchain "$nightly" 2>/dev/null | grep -q '^rust-src' \
     || ! rustup component list --installed --toolchain "$nightly" 2>/dev/null | grep -q '^llvm-tools'; then
    say "rustup toolchain install $nightly (rust-src, llvm-tools)"
    rustup toolchain install "$nightly" --profile minimal -c rust-src -c llvm-tools
  fi
  say "ok: rust $stable + $nightly (rust-src, llvm-tools)"
fi

# ---- toolchain downloads of tools/go-toolchains.txt (into root's module cache) ---------------
if [[ "${GOTEL_SKIP_GO:-}" != 1 ]]; then
  base_go="$(default_go)"
  for tc in $(go_installs toolchain); do
    path="$(go_path_of "toolchain:$tc")"
    if [[ ! -x "$path" ]]; then
      say "fetching the $tc toolchain (GOTOOLCHAIN=$tc)"
      HOME=/root GOMODCACHE=/root/go/pkg/mod GOTOOLCHAIN=$tc "$base_go" version >/dev/null 2>&1 \
        || say "warning: $tc could not be fetched; the Go version matrix lacks it"
    fi
    [[ -x "$path" ]] && say "ok: $tc toolchain"
  done
fi

# ---- third-party Go programs for the e2e tests (cached outside the clone) ---------------------
if [[ "${GOTEL_SKIP_GO:-}" != 1 && "${GOTEL_SKIP_THIRDPARTY:-}" != 1 ]]; then
  for prog in httpbin caddy; do
    path="$("$ROOT/tools/build-thirdparty.sh" "$prog")" || die "building $prog failed (tools/build-thirdparty.sh $prog)"
    say "ok: $prog ($path)"
  done
fi

# ---- tracefs ---------------------------------------------------------------------------------
if [[ ! -e /sys/kernel/tracing/uprobe_events ]]; then
  say "mounting tracefs at /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "warning: could not mount tracefs"
else
  say "ok: tracefs"
fi

# ---- the test VM: Debian's kernels and initramfs (after apt-get update above) --------------
if [[ "${GOTEL_SKIP_VM:-}" != 1 ]]; then
  "$ROOT/tools/vm/setup.sh" || die "preparing the test VM failed (tools/vm/setup.sh)"
fi

# ---- dockerd ---------------------------------------------------------------------------------
if [[ "${GOTEL_SKIP_DOCKER:-}" != 1 ]]; then
  # Debian's client (20.10) matches Debian's engine; a newer client elsewhere on PATH also works.
  DOCKER=/usr/bin/docker; [[ -x $DOCKER ]] || DOCKER=docker
  if ! "$DOCKER" info >/dev/null 2>&1; then
    say "starting dockerd (log: /var/log/gotel-dockerd.log)"
    # A pid file left by a dockerd that was killed (machine handed on, CI cleanup) stops a new one.
    if [[ -f /var/run/docker.pid ]]; then
      old="$(cat /var/run/docker.pid)"
      # Gone, a zombie, or another program that reuses the pid: not a running dockerd.
      if [[ "$(cat "/proc/$old/comm" 2>/dev/null)" != dockerd ]] || grep -q ') Z ' "/proc/$old/stat" 2>/dev/null; then
        rm -f /var/run/docker.pid
      fi
    fi
    # The containerd of a dockerd that was just killed may still be shutting down; a new dockerd
    # would find it "still running" and then time out on its socket. Give it a moment.
    cpid="$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)"
    for _ in $(seq 1 20); do
      [[ -n "$cpid" && "$(cat "/proc/$cpid/comm" 2>/dev/null)" == containerd ]] || break
      sleep 0.5
    done
    # dockerd wants the cgroup hierarchy and iptables; both are there on Debian 12.
    for attempt in 1 2; do
      setsid nohup dockerd >>/var/log/gotel-dockerd.log 2>&1 </dev/null &
      dpid=$!
      for _ in $(seq 1 60); do
        "$DOCKER" info >/dev/null 2>&1 && break 2
        kill -0 "$dpid" 2>/dev/null || break   # dockerd exited: no point waiting
        sleep 1
      done
      say "dockerd did not come up (attempt $attempt)"
    done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 /var/log/gotel-dockerd.log >&2; die "dockerd did not come up (log: /var/log/gotel-dockerd.log)"; }
  fi
  say "ok: dockerd $("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null), $(docker-compose version --short 2>/dev/null || echo 'no docker-compose')"
fi
# ---- kubernetes-validate (deploy/kubernetes/ checked offline against the API schemas) --------
if [[ "${GOTEL_SKIP_K8S:-}" != 1 ]]; then
  venv="${GOTEL_CACHE:-/var/cache/gotel}/venv-k8s"
  if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    say "kubernetes-validate 1.37.0 into $venv"
    /usr/bin/python3 -m venv "$venv" && "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0' \
      || die "pip install kubernetes-validate into $venv failed"
  fi
  say "ok: $("$venv/bin/kubernetes-validate" --version 2>&1 | head -1) ($venv)"
fi
say "done"
