#!/usr/bin/env bash
# deploy/kubernetes/ checked offline, without a cluster:
#   1. every resource against the Kubernetes API schemas (kubernetes-validate --strict, which
#      refuses unknown fields), for the release the cluster test runs (1.34) and the newest;
#   2. the rules the manifests promise: no privileged container, capabilities dropped then named,
#      read-only root file systems, memory limits everywhere, hostPID only for the node agent,
#      shareProcessNamespace for the sidecar, the node agent's ClusterRole only get/list pods,
#      the node agent's /metrics port and its liveness and readiness probes on /healthz;
#   3. that the check can fail: a copy with a misspelled field is refused.
# kubernetes-validate is installed by tools/install-deps.sh into /var/cache/gotel/venv-k8s.
# Last line: "k8s-manifests: N passed, M failed".
set -uo pipefail
SUITE=k8s-manifests
# shellcheck source=e2e/test-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../e2e/test-lib.sh"
VENV="${GOTEL_CACHE:-/var/cache/gotel}/venv-k8s"
KV="$VENV/bin/kubernetes-validate"
[[ -x "$KV" ]] || { bad "kubernetes-validate in $VENV (run tools/install-deps.sh)"; finish; }
D="$ROOT/deploy/kubernetes"
for v in 1.34.0 1.37.0; do
  check "schemas of deploy/kubernetes/*.yaml, Kubernetes $v (strict)" "$KV" --strict --quiet -k "$v" "$D"/*.yaml
done

check "manifest rules (privileges, limits, RBAC)" "$VENV/bin/python" - "$D" <<'PY'
import glob, sys, yaml
docs = [d for f in sorted(glob.glob(sys.argv[1] + "/*.yaml")) for d in yaml.safe_load_all(open(f)) if d]
errors = []
def pod_specs():
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            yield d, d["spec"]["template"]["spec"]
kinds = {d["kind"] for d in docs}
for need in ("DaemonSet", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Deployment", "Service"):
    if need not in kinds: errors.append(f"no {need}")
for d, spec in pod_specs():
    name = f'{d["kind"]}/{d["metadata"]["name"]}'
    gotel = [c for c in spec["containers"] if c["image"].startswith("gotel:")]
    if spec.get("hostPID") and d["kind"] != "DaemonSet": errors.append(f"{name}: hostPID outside the node agent")
    if d["kind"] == "DaemonSet" and not spec.get("hostPID"): errors.append(f"{name}: node agent without hostPID")
    for c in gotel if d["kind"] == "DaemonSet" else []:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        port = env.get("GOTEL_METRICS_ADDR", "").rpartition(":")[2]
        if not any(str(p["containerPort"]) == port for p in c.get("ports", [])):
            errors.append(f"{name}: no containerPort for GOTEL_METRICS_ADDR")
        for probe in ("livenessProbe", "readinessProbe"):
            if c.get(probe, {}).get("httpGet", {}).get("path") != "/healthz": errors.append(f"{name}: no {probe} on /healthz")
    if d["kind"] == "Deployment" and gotel and not spec.get("shareProcessNamespace"):
        errors.append(f"{name}: sidecar without shareProcessNamespace")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        where = f'{name} container {c["name"]}'
        if sc.get("privileged"): errors.append(f"{where}: privileged")
        if not sc.get("readOnlyRootFilesystem"): errors.append(f"{where}: root file system not read-only")
        caps = sc.get("capabilities", {})
        if caps.get("drop") != ["ALL"]: errors.append(f"{where}: capabilities not dropped first")
        allowed = {"SYS_ADMIN", "SYS_PTRACE"} if c in gotel else set()
        if not set(caps.get("add", [])) <= allowed: errors.append(f'{where}: adds {caps.get("add")}')
        if "memory" not in c.get("resources", {}).get("limits", {}): errors.append(f"{where}: no memory limit")
for d in docs:
    if d["kind"] == "ClusterRole":
        for r in d["rules"]:
            if r.get("resources") != ["pods"] or not set(r.get("verbs", [])) <= {"get", "list"}:
                errors.append(f'ClusterRole/{d["metadata"]["name"]}: more than get/list pods: {r}')
for e in errors: print("   ", e)
sys.exit(1 if errors else 0)
PY

TMPF="$(mktemp /tmp/gotel-k8s-bad.XXXXXX.yaml)"
sed 's/shareProcessNamespace:/shareProcessNamespce:/' "$D/demo.yaml" > "$TMPF"
check "a misspelled field is refused" bash -c "! '$KV' --strict --quiet -k 1.34.0 '$TMPF' >/dev/null 2>&1"
rm -f "$TMPF"
finish
