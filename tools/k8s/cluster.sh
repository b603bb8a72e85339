#!/usr/bin/env bash
# A real one-node Kubernetes v1.34 cluster on this machine, without pulling any image, and its
# complete removal (the recipe of ../shared/reference/k8s-recipe, measured there):
#   tools/k8s/cluster.sh up      build (cached) and start etcd, containerd, the control plane,
#                                the kubelet; prints the kubeconfig path
#   tools/k8s/cluster.sh down    stop everything and undo what they changed on the host
#   tools/k8s/cluster.sh import IMAGE...   docker save | ctr import (pods use IfNotPresent)
#
# Binaries and downloads are cached in $K8S_CACHE (default /var/cache/gotel/k8s, tools/k8s/build.sh);
# the cluster's state lives in $K8S_CACHE/run and is removed by `down`.
# What the cluster changes on the host, and `down` undoes: sysctls vm.overcommit_memory,
# kernel.panic, kernel.panic_on_oops (set by the kubelet) and net.ipv4.ip_forward (the CNI
# bridge's gateway), iptables chains KUBE-* (kubelet) and one FORWARD rule for the bridge, cgroups kubepods* (kubelet), the bridge
# gotelk8s0 and pod network namespaces (CNI), 198.18.0.1/32 on lo (the node address: the kubelet
# refuses a loopback one), mounts under the state directory, /var/log/containers and /var/log/pods.
#
# Differences from the recipe: the API server listens on 198.18.0.1 (pods reach it there: no
# kube-proxy runs, so its Service address leads nowhere) with RBAC authorization (so the node
# agent's ClusterRole is really what it gets); the bridge is the pods' gateway (the host reaches
# pod addresses, e.g. Jaeger's query API).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
C=${K8S_CACHE:-/var/cache/gotel/k8s}
W=$C/run
NODE_IP=198.18.0.1
BRIDGE=gotelk8s0
say() { echo "k8s-cluster: $*"; }
die() { echo "k8s-cluster: error: $*" >&2; exit 1; }
export KUBECONFIG=$W/kubeconfig
CTR=(ctr -a "$W/ctrd/containerd.sock" -n k8s.io)

start() { # NAME COMMAND...: background, log in $W/logs/NAME.log, pid in $W/logs/NAME.pid
  local name=$1; shift
  setsid nohup "$@" >"$W/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$W/logs/$name.pid"
}

up() {
  [[ $(id -u) -eq 0 ]] || die "run as root"
  [[ ! -e $W/logs/kubelet.pid ]] || die "a cluster is already up in $W (tools/k8s/cluster.sh down)"
  "$HERE/build.sh"
  mkdir -p "$W"/{logs,pki,etcd,ctrd,cni/net.d,cni/ipam,kubelet/root,kubelet/pod-logs}
  # What `down` restores.
  for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward; do
    echo "$s=$(sysctl -n "$s")"
  done >"$W/sysctl.saved"
  # Host directories the kubelet makes: removed by `down` only if they were not there before.
  local d
  for d in /var/log/containers /var/log/pods /var/lib/kubelet; do
    [[ -e $d ]] || echo "$d"
  done >"$W/dirs.created"
  if ! ip -4 addr show dev lo | grep -q " $NODE_IP/"; then
    ip addr add "$NODE_IP/32" dev lo && touch "$W/lo-address.added"
  fi

  # PKI: the API server's self-signed certificate (also the cluster CA pods get), the
  # service-account signing key, one admin token (group system:masters) for everything else.
  (cd "$W/pki"
   openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout apiserver.key -out apiserver.crt \
     -subj /CN=kube-apiserver -addext "subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:kubernetes.default.svc" 2>/dev/null
   openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
   echo "$(openssl rand -hex 16),admin,admin,system:masters" >tokens.csv)
  kubectl config set-cluster local --server="https://$NODE_IP:6443" --certificate-authority="$W/pki/apiserver.crt" --embed-certs >/dev/null
  kubectl config set-credentials admin --token="$(cut -d, -f1 "$W/pki/tokens.csv")" >/dev/null
  kubectl config set-context local --cluster=local --user=admin >/dev/null
  kubectl config use-context local >/dev/null

  sed "s#@WORK@#$W#g" "$HERE/containerd-config.toml" >"$W/ctrd/config.toml"
  sed -e "s#@WORK@#$W#g" -e "s#@BRIDGE@#$BRIDGE#g" "$HERE/10-gotel.conflist" >"$W/cni/net.d/10-gotel.conflist"
  sed -e "s#@WORK@#$W#g" -e "s#@NODE_IP@#$NODE_IP#g" "$HERE/kubelet-config.yaml" >"$W/kubelet/config.yaml"

  # Docker sets the FORWARD policy to DROP and br_netfilter passes bridged frames through it:
  # pod-to-pod traffic on the bridge needs this rule (removed by `down`).
  iptables -I FORWARD -i $BRIDGE -o $BRIDGE -j ACCEPT
  start etcd "$C/etcd/usr/bin/etcd" --data-dir "$W/etcd" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster default=http://127.0.0.1:23800
  start containerd containerd --config "$W/ctrd/config.toml"
  start apiserver "$C/bin/kube-apiserver" --etcd-servers=http://127.0.0.1:23790 --bind-address=$NODE_IP \
    --advertise-address=$NODE_IP --secure-port=6443 --tls-cert-file="$W/pki/apiserver.crt" \
    --tls-private-key-file="$W/pki/apiserver.key" --token-auth-file="$W/pki/tokens.csv" \
    --authorization-mode=Node,RBAC --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$W/pki/sa.pub" --service-account-signing-key-file="$W/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/24 --kubelet-preferred-address-types=InternalIP
  local i
  for ((i = 0; i < 120; i++)); do kubectl get --raw /readyz >/dev/null 2>&1 && break; sleep 1; done
  kubectl get --raw /readyz >/dev/null 2>&1 || { tail -20 "$W/logs/apiserver.log"; die "the API server did not become ready"; }
  start kcm "$C/bin/kube-controller-manager" --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" \
    --authorization-kubeconfig="$KUBECONFIG" --bind-address=127.0.0.1 --leader-elect=false \
    --root-ca-file="$W/pki/apiserver.crt" --service-account-private-key-file="$W/pki/sa.key" --use-service-account-credentials
  start scheduler "$C/bin/kube-scheduler" --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" \
    --authorization-kubeconfig="$KUBECONFIG" --bind-address=127.0.0.1 --leader-elect=false
  start kubelet "$C/bin/kubelet" --config="$W/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
    --root-dir="$W/kubelet/root" --hostname-override=gotel-node --node-ip=$NODE_IP
  for ((i = 0; i < 300; i++)); do
    kubectl get node gotel-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && break
    sleep 1
  done
  kubectl get node gotel-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True \
    || { tail -20 "$W/logs/kubelet.log"; die "the node did not become Ready"; }
  # The default service account must exist before pods can be created in a namespace.
  say "up: node gotel-node Ready; KUBECONFIG=$KUBECONFIG"
}

import() { # IMAGE...: from docker into the cluster's containerd
  docker save "$@" | "${CTR[@]}" images import - >/dev/null
}

# Deletes the rules that jump to KUBE-* chains, then the chains themselves (never another
# program's rules: docker's stay).
drop_kube_chains() {
  local ipt=$1 t rule chain
  for t in filter nat mangle; do
    "$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A [^ ]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | while read -r rule; do
      eval "$ipt -t $t ${rule/-A/-D}" 2>/dev/null || true
    done
    for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
      "$ipt" -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do
      "$ipt" -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}

stop_pid() { # NAME [SIGNAL]: the process started by `start`, waited for
  local f=$W/logs/$1.pid p i
  [[ -f $f ]] || return 0
  p=$(cat "$f")
  if [[ -d /proc/$p ]]; then
    kill "-${2:-TERM}" "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do [[ -d /proc/$p ]] || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  [[ -d $W ]] || { say "down: nothing to undo ($W absent)"; return 0; }
  # Best effort: every step runs even when an earlier one found nothing to do.
  set +e +o pipefail
  # Pods first, gracefully, while the kubelet still runs.
  if [[ -f $W/logs/kubelet.pid ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl delete namespace gotel gotel-demo --ignore-not-found --wait=false >/dev/null 2>&1 || true
    kubectl delete pods --all --all-namespaces --grace-period=2 --wait=false >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 60; i++)); do
      [[ -z "$(kubectl get pods -A -o name 2>/dev/null)" ]] && break
      sleep 1
    done
  fi
  stop_pid kubelet; stop_pid scheduler; stop_pid kcm
  # Whatever still runs in containerd: tasks killed, containers and sandboxes removed.
  if [[ -S $W/ctrd/containerd.sock ]]; then
    local c
    for c in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers rm "$c" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd; stop_pid apiserver; stop_pid etcd
  # Shims that outlived containerd (they are its children's children): by their socket under $W.
  local p
  for p in $(grep -lsz -- "$W/ctrd" /proc/[0-9]*/cmdline | cut -d/ -f3); do kill -KILL "$p" 2>/dev/null || true; done
  # Mounts (pod volumes, snapshots, netns) under the state directory, deepest first.
  findmnt -rn -o TARGET | grep -F "$W/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for p in /var/run/netns/cni-*; do [[ -e $p ]] && { ip netns delete "$(basename "$p")" 2>/dev/null || true; }; done
  ip link del "$BRIDGE" 2>/dev/null || true
  drop_kube_chains iptables; drop_kube_chains ip6tables
  while iptables -D FORWARD -i $BRIDGE -o $BRIDGE -j ACCEPT 2>/dev/null; do :; done
  # cgroups the kubelet made, deepest first (empty once their processes are gone).
  find /sys/fs/cgroup -depth -type d -name 'kubepods*' 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [[ -f $W/sysctl.saved ]]; then
    while IFS= read -r kv; do sysctl -qw "$kv" || true; done <"$W/sysctl.saved"
  fi
  [[ -f $W/lo-address.added ]] && { ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true; }
  [[ -f $W/dirs.created ]] && xargs -r rm -rf <"$W/dirs.created"
  rm -rf "$W"
  say "down: stopped and undone"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  import) shift; import "$@" ;;
  *) die "usage: $0 up|down|import IMAGE..." ;;
esac
