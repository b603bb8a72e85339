#!/usr/bin/env bash
# The gotel demo in one command: three Go services (frontend -HTTP-> backend -gRPC-> inventory),
# each traced by a gotel sidecar, traces in Jaeger.
#
#   docker/demo.sh          install what is missing, build gotel and the images, start the stack
#   docker/demo.sh down     stop it and remove its containers and network
#   docker/demo.sh logs     follow the gotel sidecars' logs
#
# Needs root (apt-get, dockerd, and gotel's capabilities). Env: COMPOSE_PROJECT_NAME (default
# gotel-demo), and the port variables of docker/compose.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/docker/compose.yaml"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-gotel-demo}"
# Where this host mounts cgroup2: the sidecars get it read-only for GOTEL_PROPAGATION=inject.
HOST_CGROUP2="${HOST_CGROUP2:-$(findmnt -n -t cgroup2 -o TARGET 2>/dev/null | head -1)}"
export HOST_CGROUP2="${HOST_CGROUP2:-/sys/fs/cgroup}"
say() { echo "demo: $*"; }

compose() {
  if command -v docker-compose >/dev/null; then docker-compose -f "$COMPOSE_FILE" "$@"
  else docker compose -f "$COMPOSE_FILE" "$@"; fi
}

case "${1:-up}" in
  down)
    compose down --remove-orphans
    exit 0 ;;
  logs)
    compose logs -f gotel-frontend gotel-backend gotel-inventory
    exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|down|logs]" >&2; exit 2 ;;
esac

"$ROOT/tools/install-deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"
say "cargo build --release -p gotel"
(cd "$ROOT" && cargo build --release -p gotel)
"$ROOT/docker/build-images.sh"
say "docker-compose -f docker/compose.yaml up -d (project $COMPOSE_PROJECT_NAME)"
# The frontend's own orders begin only once every sidecar has attached (LOAD_START=signal, then
# SIGUSR1): an order sent earlier would be traced by some services and not others, a trace in
# pieces in Jaeger. Each sidecar logs "attached pid=..." once its probes and programs are in place.
export LOAD_START=signal
compose up -d --remove-orphans
compose ps
say "waiting for the sidecars to attach (up to 120 s)"
for svc in gotel-frontend gotel-backend gotel-inventory; do
  for ((i = 0; ; i++)); do
    compose logs --no-color "$svc" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -q ': attached pid=' && break
    if ((i >= 240)); then
      compose logs --no-color --tail 20 "$svc" >&2 || true
      say "$svc has not attached after 120 s (its last log lines above); the stack is still up: $0 logs, $0 down" >&2
      exit 1
    fi
    sleep 0.5
  done
  say "$svc attached"
done
compose kill -s SIGUSR1 frontend >/dev/null 2>&1 || say "could not signal the frontend: its own orders are off (send yours with the curl below)"
cat <<MSG

demo: running. The frontend orders from the backend every ${LOAD_INTERVAL:-2s}; send your own order with
  curl 'http://127.0.0.1:${FRONTEND_PORT:-8080}/order?customer=you&tier=gold&items=coffee,bagel&qty=3'

  open http://localhost:${JAEGER_UI_PORT:-16686}   (services "frontend", "backend" and "inventory")

demo: sidecar logs: $0 logs      stop: $0 down
MSG
