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
compose up -d --remove-orphans
compose ps
cat <<MSG

demo: running. The frontend orders from the backend every ${LOAD_INTERVAL:-2s}; send your own order with
  curl 'http://127.0.0.1:${FRONTEND_PORT:-8080}/order?customer=you&tier=gold&items=coffee,bagel&qty=3'

  open http://localhost:${JAEGER_UI_PORT:-16686}   (services "frontend", "backend" and "inventory")

demo: sidecar logs: $0 logs      stop: $0 down
MSG
