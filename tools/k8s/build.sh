#!/bin/bash
# Builds the control plane and kubelet of Kubernetes v1.34.4 from the Go module proxy into
# $K8S_CACHE/bin (default /var/cache/gotel/k8s), and fetches Debian's etcd and CNI plugins there.
# Cached: a second run with the binaries present does nothing (~295 s cold on 2 cores, from the
# recipe in ../shared/reference/k8s-recipe). Outside the clone so `git clean` keeps it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
C=${K8S_CACHE:-/var/cache/gotel/k8s}
GO=${GO:-/usr/local/go/bin/go}
mkdir -p "$C/bin" "$C/k8sbuild" "$C/deb"
if [ ! -x "$C/bin/kubelet" ] || [ ! -x "$C/bin/kube-apiserver" ]; then
  cp "$HERE/go.mod" "$C/k8sbuild/go.mod"
  # tools.go.txt, not .go, so the project's Go tooling never sees a build-tagged stray file.
  cp "$HERE/tools.go.txt" "$C/k8sbuild/tools.go"
  export GOMODCACHE=$C/gomod GOCACHE=$C/gocache GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
  cd "$C/k8sbuild"
  t0=$(date +%s)
  "$GO" mod tidy -e > tidy.log 2>&1 || { echo "go mod tidy failed, see $C/k8sbuild/tidy.log" >&2; exit 1; }
  LD="-s -w -X k8s.io/component-base/version.gitVersion=v1.34.4 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
  "$GO" build -ldflags "$LD" -o "$C/bin/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet
  echo "k8s build: $(( $(date +%s) - t0 )) s"
fi
cd "$C/deb"
if [ ! -x "$C/etcd/usr/bin/etcd" ]; then
  apt-get download etcd-server >/dev/null 2>&1
  dpkg -x etcd-server_*.deb "$C/etcd"
fi
if [ ! -x "$C/cni/usr/lib/cni/bridge" ]; then
  apt-get download containernetworking-plugins >/dev/null 2>&1
  dpkg -x containernetworking-plugins_*.deb "$C/cni"
fi
echo "k8s binaries in $C/bin, etcd in $C/etcd, CNI in $C/cni"
