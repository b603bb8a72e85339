#!/usr/bin/env bash
# gotel on a real one-node Kubernetes cluster (tools/k8s/cluster.sh), both ways, checked through
# Jaeger's query API:
#   - Jaeger in the cluster (deploy/kubernetes/jaeger.yaml); the node agent (node-daemonset.yaml,
#     with rbac.yaml: RBAC is on, so its ClusterRole is all it may do) selecting the demo backend
#     by namespace and pod label; the demo frontend with a gotel sidecar (demo.yaml) injecting
#     `traceparent` (GOTEL_PROPAGATION=inject, the socket path on this locked-down kernel);
#   - spans of both services carry k8s.namespace.name, k8s.pod.name, k8s.pod.uid,
#     k8s.container.name, k8s.node.name and container.id equal to what the API server says;
#   - each order is one trace across both services (the backend's SERVER span is the child of
#     the frontend's CLIENT span);
#   - the backend pod deleted: its replacement (new pid, new pod) is traced by the node agent
#     again, with the new pod's identity;
#   - the node agent's /metrics labels the backend's series with its pod; its /healthz is 200;
#   - a second selector picks Jaeger with probe specs its binary lacks: reported, not fatal (and
#     its 85 MB binary, parsed, is the memory peak the DaemonSet's limit must allow);
#   - with injection off (the agent restarted with GOTEL_PROPAGATION=none) and a frontend the node
#     agent traces too, each order is still one trace across both (join.same_node: matched in the
#     kernel by the connection, nothing written).
# Everything is undone at the end (tools/k8s/cluster.sh down), also on failure or interrupt.
# Takes about 10-15 minutes with Kubernetes already built (5 more the first time, see build.sh).
# Env: GOTEL_BIN (default target/release/gotel, built if missing), K8S_KEEP=1 keeps the cluster.
# Last line: "k8s: N passed, M failed".
set -uo pipefail
SUITE=k8s
# shellcheck source=e2e/test-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../e2e/test-lib.sh"
HERE="$ROOT/tools/k8s"
export KUBECONFIG=${K8S_CACHE:-/var/cache/gotel/k8s}/run/kubeconfig
TMP="$(mktemp -d /tmp/gotel-k8s-test.XXXXXX)"
T0=$SECONDS
DOWN_DONE=
cleanup() {
  if [[ -z "${K8S_KEEP:-}" && -z "$DOWN_DONE" ]]; then "$HERE/cluster.sh" down 2>&1 | sed 's/^/  /'; fi
  rm -rf "$TMP"
}
host_state() { # what the cluster changes on the host, to compare before and after
  sysctl -n vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward | tr '\n' ' '
  ip -4 addr show dev lo | grep -c ' 198.18.0.1/'
  find /sys/fs/cgroup -maxdepth 3 -type d -name 'kubepods*' 2>/dev/null | wc -l
  { iptables-save; ip6tables-save; } 2>/dev/null | grep -c 'KUBE-\|gotelk8s0'
  ip link show gotelk8s0 2>/dev/null | wc -l
  findmnt -rn -o TARGET | grep -c '/k8s/run/'
  ls -d /var/lib/kubelet /var/log/containers /var/log/pods 2>/dev/null | wc -l
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM
[[ $(id -u) -eq 0 ]] || { bad "runs as root"; finish; }
k() { kubectl "$@"; }

# ---- images --------------------------------------------------------------------------------------
GOTEL_BIN="${GOTEL_BIN:-$ROOT/target/release/gotel}"
if [[ ! -x "$GOTEL_BIN" ]]; then
  build_gotel GOTEL_SKIP_VM=1
elif ! docker info >/dev/null 2>&1; then
  GOTEL_SKIP_VM=1 "$ROOT/tools/install-deps.sh" | sed 's/^/  /' || { bad "tools/install-deps.sh"; finish; }
fi
GOTEL_BIN="$GOTEL_BIN" "$ROOT/docker/build-images.sh" | sed 's/^/  /' || { bad "docker/build-images.sh"; finish; }
# The pod sandbox ("pause") image: the recipe's program, static, FROM scratch.
GO="$(GO="" GOTEL_ROOT="$ROOT" && . "$ROOT/tools/go-toolchains.sh" && default_go)" || { bad "a Go toolchain"; finish; }
mkdir -p "$TMP/pause" && cp "$HERE/pause.go.txt" "$TMP/pause/pause.go"
(cd "$TMP/pause" && printf 'module pause\ngo 1.19\n' >go.mod && CGO_ENABLED=0 GOCACHE=/var/cache/gotel/gocache "$GO" build -o pause .) \
  || { bad "go build pause"; finish; }
printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$TMP/pause/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t gotel-k8s-pause:local "$TMP/pause" >/dev/null 2>&1 || { bad "docker build pause"; finish; }
ok "images built ($((SECONDS - T0)) s)"

# ---- cluster -------------------------------------------------------------------------------------
"$HERE/cluster.sh" down >/dev/null 2>&1   # leftovers of an interrupted run
host_state >"$TMP/host.before"
t=$SECONDS
"$HERE/cluster.sh" up 2>&1 | sed 's/^/  /'
[[ ${PIPESTATUS[0]} -eq 0 ]] || { bad "cluster up"; finish; }
ok "cluster up ($((SECONDS - t)) s)"
"$HERE/cluster.sh" import gotel:dev gotel-demo-frontend:dev gotel-demo-backend:dev gotel-jaeger:1.76.0 gotel-k8s-pause:local \
  || { bad "images imported into containerd"; finish; }

wait_ready() { # NAMESPACE SELECTOR SECONDS: every pod of the selector Ready
  # `kubectl wait` fails at once while no pod matches yet (a Deployment's pod appears after its
  # ReplicaSet's): wait for one to exist first, within the same time.
  local end=$((SECONDS + $3))
  until k -n "$1" get pod -l "$2" -o name 2>/dev/null | grep -q .; do
    ((SECONDS < end)) || return 1
    sleep 1
  done
  k -n "$1" wait --for=condition=Ready pod -l "$2" --timeout="$((end - SECONDS + 1))s" >/dev/null 2>&1
}
pod_of() { k -n "$1" get pod -l "$2" --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }
ip_of() { k -n "$1" get pod "$2" -o jsonpath='{.status.podIP}'; }

# Manifests as a user applies them, with three local differences: no cluster DNS and no
# kube-proxy here, so Services are replaced by pod addresses; the API server is reached at the
# node address; this host mounts cgroup2 at $HOST_CGROUP2.
HOST_CGROUP2="$(findmnt -n -t cgroup2 -o TARGET | head -1)"
D="$ROOT/deploy/kubernetes"
t=$SECONDS
k apply -f "$D/namespace.yaml" -f "$D/rbac.yaml" -f "$D/jaeger.yaml" >/dev/null || { bad "apply jaeger"; finish; }
wait_ready gotel app.kubernetes.io/name=jaeger 300 || { k -n gotel describe pods | tail -20; bad "jaeger Ready"; finish; }
JIP="$(ip_of gotel "$(pod_of gotel app.kubernetes.io/name=jaeger)")"
JAEGER="http://$JIP:16686"
wait_http "$JAEGER/api/services" 60 && ok "jaeger Ready in the cluster at $JIP ($((SECONDS - t)) s)" || { bad "jaeger query API"; finish; }
local_edit() {
  sed -e "s#http://jaeger.gotel:4318#http://$JIP:4318#" -e "s#path: /sys/fs/cgroup,#path: $HOST_CGROUP2,#" "$@"
}

t=$SECONDS
local_edit "$D/node-daemonset.yaml" \
  | sed 's#- {name: GOTEL_NODE, value: "true"}#&\n            - {name: GOTEL_K8S_API, value: "https://198.18.0.1:6443"}#' \
  | sed 's#^    namespace=gotel-demo,.*#&\n    namespace=gotel,container=jaeger,probes-file=/etc/gotel/backend.probes#' \
  | k apply -f - >/dev/null || { bad "apply node-daemonset"; finish; }
wait_ready gotel app.kubernetes.io/name=gotel-node 300 || { k -n gotel describe pods -l app.kubernetes.io/name=gotel-node | tail -20; bad "node agent Ready"; finish; }
AGENT="$(pod_of gotel app.kubernetes.io/name=gotel-node)"
ok "node agent Ready ($((SECONDS - t)) s)"

t=$SECONDS
k create namespace gotel-demo >/dev/null 2>&1
demo() { # the demo's objects of one app, with the frontend's backend address
  local_edit "$D/demo.yaml" | sed "s#http://backend:8081#http://$1:8081#" \
    | k apply -l "app.kubernetes.io/name=$2" -f - >/dev/null
}
demo none backend || { bad "apply demo backend"; finish; }
wait_ready gotel-demo app.kubernetes.io/name=backend 300 || { bad "backend Ready"; finish; }
BPOD="$(pod_of gotel-demo app.kubernetes.io/name=backend)"; BIP="$(ip_of gotel-demo "$BPOD")"
demo "$BIP" frontend || { bad "apply demo frontend"; finish; }
wait_ready gotel-demo app.kubernetes.io/name=frontend 300 || { k -n gotel-demo describe pods | tail -30; bad "frontend Ready"; finish; }
FPOD="$(pod_of gotel-demo app.kubernetes.io/name=frontend)"
ok "demo Running: backend $BPOD ($BIP), frontend $FPOD with its gotel sidecar ($((SECONDS - t)) s)"

# ---- checks --------------------------------------------------------------------------------------
spans() { # SERVICE -> the service's spans of the last 10 minutes, flattened
  curl -m 10 -fsS -G "$JAEGER/api/traces" --data-urlencode "service=$1" --data-urlencode "limit=200" \
    --data-urlencode "lookback=10m" 2>/dev/null \
  | jq '[.data[]? | . as $tr | .spans[] | {trace: $tr.traceID, id: .spanID, name: .operationName,
        kind: ([.tags[]? | select(.key == "span.kind") | .value][0]),
        parent: ([.references[]? | select(.refType == "CHILD_OF") | .spanID][0]),
        svc: $tr.processes[.processID].serviceName,
        res: ($tr.processes[.processID].tags | map({(.key): (.value | tostring)}) | add)}]' 2>/dev/null || echo '[]'
}
# The identity the API server gives a pod's container, as the resource attributes should say it.
expected() { # NAMESPACE POD CONTAINER
  k -n "$1" get pod "$2" -o json | jq -c --arg c "$3" '{
    "k8s.namespace.name": .metadata.namespace, "k8s.pod.name": .metadata.name, "k8s.pod.uid": .metadata.uid,
    "k8s.container.name": $c, "k8s.node.name": .spec.nodeName,
    "container.id": (.status.containerStatuses[] | select(.name == $c) | .containerID | sub("^[a-z-]+://"; ""))}'
}
has_identity() { # SPANS_JSON SERVICE EXPECTED: every span of the service carries the identity
  jq -e --arg s "$2" --argjson want "$3" \
    '[.[] | select(.svc == $s)] | length > 0 and all(.res as $r | $want | to_entries | all($r[.key] == .value))' "$1" >/dev/null
}
joined() { # SPANS_JSON BACKEND_POD [CLIENT_SVC]: traces where the backend's SERVER span (of that pod) is the child of a CLIENT span of CLIENT_SVC (frontend)
  jq --arg p "$2" --arg c "${3:-frontend}" '. as $all | [.[] | select(.svc == "backend" and .kind == "server" and .res["k8s.pod.name"] == $p)
     | .parent as $q | .trace as $t | select(any($all[]; .id == $q and .trace == $t and .svc == $c and .kind == "client"))
     | .trace] | unique | length' "$1"
}
wait_joined() { # BACKEND_POD SECONDS -> spans in $TMP/spans.json once a joined trace is there
  local i
  for ((i = 0; i < $2; i += 3)); do
    jq -s 'add' <(spans frontend) <(spans backend) >"$TMP/spans.json"
    [[ "$(joined "$TMP/spans.json" "$1")" -ge 2 ]] && return 0
    sleep 3
  done
  return 1
}

t=$SECONDS
if wait_joined "$BPOD" 120; then
  ok "spans in Jaeger ($((SECONDS - t)) s after the demo was Running)"
else
  bad "spans in Jaeger: no joined trace within 120 s"
  # A node short of disk evicts the pods (kubelet: ephemeral-storage): say so, it is no bug of gotel.
  k get events -A --field-selector reason=Evicted -o custom-columns=POD:.involvedObject.name,WHY:.message --no-headers 2>/dev/null \
    | head -5 | sed 's/^/  evicted: /'
fi
check "frontend spans (sidecar) carry the pod identity: $(expected gotel-demo "$FPOD" frontend)" \
  has_identity "$TMP/spans.json" frontend "$(expected gotel-demo "$FPOD" frontend)"
check "backend spans (node agent, service.name from the pod label) carry the pod identity: $(expected gotel-demo "$BPOD" backend)" \
  has_identity "$TMP/spans.json" backend "$(expected gotel-demo "$BPOD" backend)"
n="$(joined "$TMP/spans.json" "$BPOD")"
check "orders are one trace across both services ($n traces: backend SERVER child of frontend CLIENT)" test "$n" -ge 2
check "the backend's functions are traced (probes-file of the selector)" \
  test "$(jq '[.[] | select(.svc == "backend" and .name == "main.quote")] | length' "$TMP/spans.json")" -gt 0
# The node agent's /metrics and /healthz (GOTEL_METRICS_ADDR in the DaemonSet): the backend's
# series labelled with its pod.
AIP="$(ip_of gotel "$AGENT")"
curl -m 10 -fsS "http://$AIP:9464/metrics" >"$TMP/metrics.txt" 2>/dev/null
check "the node agent's /metrics labels the backend's spans with its pod" grep -qE \
  "^gotel_spans_total\{pid=\"[0-9]+\",service_name=\"backend\",k8s_namespace=\"gotel-demo\",k8s_pod=\"$BPOD\",k8s_container=\"backend\"\} [1-9]" \
  "$TMP/metrics.txt"
check "the node agent's /healthz is 200" curl -m 10 -fsS -o /dev/null "http://$AIP:9464/healthz"

# Memory of gotel: the peak of its container's memory cgroup (what a limit applies to: the
# process and the BPF maps it created), the process's own peak RSS, and CPU time used.
mem_of() { # NAMESPACE POD CONTAINER -> "cgroup peak X MiB, RSS peak Y MiB"
  local cid d peak="?" p v rss=0 cpu="?"
  cid="$(expected "$1" "$2" "$3" | jq -r '.["container.id"]')"
  for d in $(find /sys/fs/cgroup -type d -name "*$cid*" 2>/dev/null); do
    [[ -f $d/memory.max_usage_in_bytes ]] && peak=$(($(cat "$d/memory.max_usage_in_bytes") >> 20))
    [[ -f $d/memory.peak ]] && peak=$(($(cat "$d/memory.peak") >> 20))
    [[ -f $d/cpuacct.usage ]] && cpu=$(($(cat "$d/cpuacct.usage") / 1000000))
  done
  for p in $(grep -ls "$cid" /proc/[0-9]*/cgroup | cut -d/ -f3); do
    v="$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null)"
    rss=$((rss + ${v:-0}))
  done
  echo "cgroup peak $peak MiB, RSS peak $((rss >> 10)) MiB, CPU $cpu ms since start"
}
say "memory: node agent (tracing 1 process): $(mem_of gotel "$AGENT" gotel); sidecar: $(mem_of gotel-demo "$FPOD" gotel)"

# ---- a restarted pod -----------------------------------------------------------------------------
t=$SECONDS
k -n gotel-demo delete pod "$BPOD" --wait=false >/dev/null
for ((i = 0; i < 120; i++)); do
  NBPOD="$(pod_of gotel-demo app.kubernetes.io/name=backend)"
  [[ -n "$NBPOD" && "$NBPOD" != "$BPOD" ]] && wait_ready gotel-demo app.kubernetes.io/name=backend 5 && break
  sleep 1
done
NBIP="$(ip_of gotel-demo "$NBPOD")"
# The frontend follows the backend's new address (a Service would do it in a cluster with kube-proxy).
demo "$NBIP" frontend && k -n gotel-demo rollout status deploy/frontend --timeout=300s >/dev/null \
  || { bad "frontend rolled to the new backend"; finish; }
FPOD="$(k -n gotel-demo get pod -l app.kubernetes.io/name=frontend -o json | jq -r '[.items[] | select(.metadata.deletionTimestamp == null)][0].metadata.name')"
if wait_joined "$NBPOD" 180; then ok "restarted backend pod $NBPOD traced again ($((SECONDS - t)) s)"; else bad "restarted backend pod $NBPOD traced again"; fi
check "the restarted pod's spans carry its new identity" \
  has_identity <(jq --arg p "$NBPOD" '[.[] | select(.svc != "backend" or .res["k8s.pod.name"] == $p)]' "$TMP/spans.json") \
  backend "$(expected gotel-demo "$NBPOD" backend)"
k -n gotel logs "$AGENT" >"$TMP/agent.log" 2>&1
check "a selected process the node agent cannot trace (Jaeger, with the backend's probe specs) is reported, not fatal" \
  grep -q 'process [0-9]* is not traced: .*main.quote' "$TMP/agent.log"
check "the node agent reported no other failure" \
  bash -c "! grep -E ' (WARN|ERROR) ' '$TMP/agent.log' | grep -v 'FIONREAD\|SOCK_OPS programs\|nothing will be injected\|is not traced'"
grep -E "WARN|ERROR|tracing a new" "$TMP/agent.log" | head -10 | cut -c1-300 | sed 's/^/  agent: /'

# ---- one trace without injection: the node agent traces both ends (join.same_node) -------------
# The agent restarted with GOTEL_PROPAGATION=none and one more selector: a frontend without a
# sidecar (its own load sends it orders), so the agent traces both ends of its calls to the
# backend's pod address. Nothing is written into either process; each order must still be one
# trace, the backend's SERVER span the child of that frontend's CLIENT span.
t=$SECONDS
k -n gotel get configmap gotel-node -o json \
  | jq '.data.select += "namespace=gotel-demo,label:app.kubernetes.io/name=frontend-node\n"' | k apply -f - >/dev/null \
  && k -n gotel set env daemonset/gotel-node GOTEL_PROPAGATION=none >/dev/null \
  && k -n gotel rollout status daemonset/gotel-node --timeout=300s >/dev/null || { bad "node agent restarted with injection off"; finish; }
AGENT="$(k -n gotel get pod -l app.kubernetes.io/name=gotel-node -o json | jq -r '[.items[] | select(.metadata.deletionTimestamp == null)][0].metadata.name')"
cat <<EOF_NODE_FRONTEND | k apply -f - >/dev/null || { bad "apply frontend-node"; finish; }
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend-node, namespace: gotel-demo, labels: {app.kubernetes.io/name: frontend-node}}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: frontend-node}}
  template:
    metadata: {labels: {app.kubernetes.io/name: frontend-node}}
    spec:
      automountServiceAccountToken: false
      containers:
        - name: frontend
          image: gotel-demo-frontend:dev
          imagePullPolicy: IfNotPresent
          command: ["/app/frontend"]
          env:
            - {name: BACKEND_URL, value: "http://$NBIP:8081"}
            - {name: LOAD_INTERVAL, value: "1s"}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: ["ALL"]}}
          resources: {limits: {memory: 64Mi}}
EOF_NODE_FRONTEND
wait_ready gotel-demo app.kubernetes.io/name=frontend-node 300 || { bad "frontend-node Ready"; finish; }
same_node_joined() { # SECONDS: a joined trace from frontend-node in $TMP/spans.json
  local i
  for ((i = 0; i < $1; i += 3)); do
    jq -s 'add' <(spans frontend-node) <(spans backend) >"$TMP/spans.json"
    [[ "$(joined "$TMP/spans.json" "$NBPOD" frontend-node)" -ge 2 ]] && return 0
    sleep 3
  done
  return 1
}
same_node_joined 120
n="$(joined "$TMP/spans.json" "$NBPOD" frontend-node)"
check "injection off, both ends traced by the node agent: orders are one trace ($n traces: backend SERVER child of frontend-node CLIENT) ($((SECONDS - t)) s)" \
  test "$n" -ge 2
k -n gotel logs "$AGENT" >"$TMP/agent2.log" 2>&1
check "the node agent shares join.same_node's map and reported no failure" \
  bash -c "grep -q 'join.same_node: HTTP/1 server spans join' '$TMP/agent2.log' && ! grep -E ' (WARN|ERROR) ' '$TMP/agent2.log' | grep -v 'FIONREAD\|SOCK_OPS programs\|is not traced'"
grep -E "WARN|ERROR|same_node" "$TMP/agent2.log" | head -5 | cut -c1-300 | sed 's/^/  agent: /'
# The agent now traces two processes (backend, frontend-node) with one set of kernel programs:
# each program at most twice among its descriptors (aya's copy and the uprobe_multi copy), where
# a set per process would hold four.
agent_pid() {
  local p
  for p in $(pgrep -x gotel); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'GOTEL_NODE=true' && { echo "$p"; return; }
  done
}
copies_of_programs() { # PID -> the most distinct loads of one program (same tag) it holds
  local f
  for f in /proc/"$1"/fdinfo/*; do
    awk '/^prog_tag:/ {t=$2} /^prog_id:/ {i=$2} END {if (t != "") print t, i}' "$f" 2>/dev/null
  done | sort -u | awk '{print $1}' | uniq -c | sort -rn | awk 'NR == 1 {print $1}'
}
AP="$(agent_pid)"
copies="$(copies_of_programs "${AP:-0}")"
check "the node agent (pid ${AP:-?}) traces backend and frontend-node with one set of kernel programs (${copies:-?} copies of a program at most)" \
  bash -c "grep -q 'one set of kernel programs, maps and ring buffer for every target' '$TMP/agent2.log' && [[ '${copies:-9}' -le 2 && '${copies:-0}' -ge 1 ]]"
if [[ -z "${K8S_KEEP:-}" ]]; then
  t=$SECONDS
  "$HERE/cluster.sh" down 2>&1 | sed 's/^/  /'; DOWN_DONE=1
  host_state >"$TMP/host.after"
  check "cluster down, host as before (sysctls, lo address, cgroups, KUBE-* chains, bridge, mounts, dirs) ($((SECONDS - t)) s)" \
    diff "$TMP/host.before" "$TMP/host.after"
fi
say "time: $((SECONDS - T0)) s"
finish
