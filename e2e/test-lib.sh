# shellcheck shell=bash
# Sourced by e2e/jaeger-test.sh and e2e/compose-test.sh after they set SUITE (jaeger, compose):
# ROOT, the pass/fail counters and their helpers, and the last line "SUITE: N passed, M failed"
# that tools/test.sh adds up.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PASS=0 FAIL=0
ok()   { PASS=$((PASS + 1)); echo "  ok   $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "  FAIL $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
say()  { echo "$SUITE-test: $*"; }
finish() { echo "$SUITE: $PASS passed, $FAIL failed"; [[ $FAIL -eq 0 ]]; exit $?; }
trap 'say interrupted; exit 130' INT TERM

wait_http() { # URL SECONDS
  local i; for ((i = 0; i < $2 * 2; i++)); do curl -m 10 -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done; return 1
}

# Ports the suites listen on. Their defaults sit below the kernel's ephemeral range
# (ip_local_port_range, 32768-60999 by default) and below Kubernetes' NodePorts (30000-32767): a
# port in that range can be held at any moment as the local end of some other process's outgoing
# connection, and docker's proxy then fails with "bind: address already in use" (CI, stop 25:
# 127.0.0.1:38080). free_base also skips a base whose ports are taken now.
port_in_use() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }
# free_base BASE OFFSET...: the first of BASE, BASE+100, ... (10 tries) with every BASE+OFFSET unused.
free_base() {
  local base=$1 o taken i; shift
  for ((i = 0; i < 10; i++)); do
    taken=0; for o in "$@"; do port_in_use $((base + o)) && { taken=1; break; }; done
    ((taken)) || break
    say "port $((base + o)) is in use: trying base $((base + 100))" >&2
    base=$((base + 100))
  done
  echo "$base"
}

# build_gotel [VAR=VALUE...]: tools/install-deps.sh (with those variables set), then
# cargo build --release -p gotel (log in $TMP/cargo.log); a failure ends the test.
build_gotel() {
  env "$@" "$ROOT/tools/install-deps.sh" | sed 's/^/  /' || { bad "tools/install-deps.sh"; finish; }
  export PATH="$HOME/.cargo/bin:$PATH"
  say "cargo build --release -p gotel"
  (cd "$ROOT" && cargo build --release -p gotel >"$TMP/cargo.log" 2>&1) \
    || { tail -30 "$TMP/cargo.log"; bad "cargo build --release -p gotel"; finish; }
}
