#!/usr/bin/env bash
# gotel exporting to a real Jaeger v2, without Docker. Everything listens on 127.0.0.1.
#   1. grpc            OTEL_EXPORTER_OTLP_PROTOCOL=grpc, OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:GRPC
#   2. http/protobuf   OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:HTTP
#   3. flush on exit   http/protobuf with OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=.../v1/traces and a
#                      60 s batch delay: the spans must arrive because gotel flushes on SIGTERM
# Each run launches the demo backend (docker/demo/backend) under gotel (`gotel -- backend`), sends
# price requests, and reads the spans back through Jaeger's query API: names, attributes, the
# lookupInventory -> quote parent link, and service.name / resource attributes.
# Prints "jaeger: N passed, M failed" last; exits non-zero on any failure.
# Env: JAEGER_TEST_BASE_PORT (default 21000, or the next free base (test-lib.sh free_base): jaeger on +317/+318/+686/+685/+133, backend on +81..)
set -uo pipefail
SUITE=jaeger
# shellcheck source=e2e/test-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"

B="${JAEGER_TEST_BASE_PORT:-$(free_base 21000 317 318 686 685 133 81 82 83)}"
export JAEGER_LISTEN_HOST=127.0.0.1 JAEGER_OTLP_GRPC_PORT=$((B + 317)) JAEGER_OTLP_HTTP_PORT=$((B + 318))
export JAEGER_QUERY_HTTP_PORT=$((B + 686)) JAEGER_QUERY_GRPC_PORT=$((B + 685)) JAEGER_HEALTH_PORT=$((B + 133))
export JAEGER_UI_ASSETS="$ROOT/docker/jaeger-ui"
JAEGER="http://127.0.0.1:$JAEGER_QUERY_HTTP_PORT"
TMP="$(mktemp -d /tmp/gotel-jaeger-test.XXXXXX)"
GOTEL="$ROOT/target/release/gotel"
PIDS=()
cleanup() {
  local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT

alive() { [[ -e /proc/$1 ]] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }

# ---- build --------------------------------------------------------------------------------------
[[ -n "${JAEGER_TEST_SKIP_BUILD:-}" ]] || build_gotel GOTEL_SKIP_DOCKER=1
[[ -x "$GOTEL" ]] || { bad "target/release/gotel exists"; finish; }
JAEGER_BIN="$("$ROOT/tools/build-jaeger.sh")" || { bad "tools/build-jaeger.sh"; finish; }
# shellcheck source=tools/go-toolchains.sh
GO="$(GO="" GOTEL_ROOT="$ROOT" && . "$ROOT/tools/go-toolchains.sh" && default_go)" || { bad "a Go toolchain (tools/install-deps.sh)"; finish; }
(cd "$ROOT/docker/demo" && GOCACHE="${GOCACHE:-/var/cache/gotel/gocache}" CGO_ENABLED=0 "$GO" build -o "$TMP/backend" ./backend) \
  || { bad "go build docker/demo/backend"; finish; }

# ---- jaeger -------------------------------------------------------------------------------------
"$JAEGER_BIN" --config "$ROOT/otel-config/jaeger.yaml" >"$TMP/jaeger.log" 2>&1 &
PIDS+=($!)
if wait_http "http://127.0.0.1:$JAEGER_HEALTH_PORT/status" 60 && wait_http "$JAEGER/api/services" 10; then
  ok "jaeger up on 127.0.0.1 (otlp $JAEGER_OTLP_GRPC_PORT/$JAEGER_OTLP_HTTP_PORT, query $JAEGER_QUERY_HTTP_PORT)"
else
  tail -20 "$TMP/jaeger.log"; bad "jaeger up"; finish
fi

spans_json() { # SERVICE -> every span of the service's main.quote traces, flattened with tags
  curl -m 10 -fsS -G "$JAEGER/api/traces" --data-urlencode "service=$1" --data-urlencode "operation=main.quote" \
    --data-urlencode "limit=100" --data-urlencode "lookback=1h" 2>/dev/null \
  | jq '[.data[]? | . as $tr | .spans[] | {trace: $tr.traceID, id: .spanID, name: .operationName,
        parent: ([.references[]? | select(.refType == "CHILD_OF") | .spanID][0]),
        svc: $tr.processes[.processID].serviceName,
        res: ($tr.processes[.processID].tags | map({(.key): (.value | tostring)}) | add),
        tags: (.tags | map({(.key): (.value | tostring)}) | add)}]' 2>/dev/null || echo '[]'
}

# run NAME PORT QTY ENV... : launch backend under gotel, send 3 price requests, stop, check spans.
run() {
  local name=$1 port=$2 qty=$3; shift 3
  local svc="jaeger-smoke-$name" log="$TMP/gotel-$name.log" ready="$TMP/ready-$name"
  say "[$name] gotel -- backend (service $svc, $*)"
  env "$@" OTEL_SERVICE_NAME="$svc" OTEL_RESOURCE_ATTRIBUTES="test.run=$name,deployment.environment=e2e" \
    GOTEL_PROBES='main.quote(item=item, qty=qty, price.cents=ret0); main.lookupInventory(item=name, sku=ret0.SKU)' \
    GOTEL_READY_FILE="$ready" GOTEL_LOG="${GOTEL_LOG:-info}" LISTEN_ADDR="127.0.0.1:$port" \
    "$GOTEL" -- "$TMP/backend" >"$log" 2>&1 &
  local gp=$!; PIDS+=("$gp")
  local i; for ((i = 0; i < 120; i++)); do [[ -e "$ready" ]] && break; alive "$gp" || break; sleep 0.5; done
  check "[$name] gotel ready (GOTEL_READY_FILE)" test -e "$ready"
  check "[$name] backend answers under gotel" wait_http "http://127.0.0.1:$port/healthz" 20
  local bp; bp="$(pgrep -P "$gp" | head -1)"; [[ -n "$bp" ]] && PIDS+=("$bp")
  for item in coffee tea unicorn; do
    curl -m 10 -sS -o /dev/null "http://127.0.0.1:$port/price?item=$item&qty=$qty" || true
  done
  if [[ "$name" == flush ]]; then
    sleep 1
    say "[$name] SIGTERM to gotel: it must flush the batch before exiting"
  else
    for ((i = 0; i < 30; i++)); do
      [[ "$(spans_json "$svc" | jq '[.[] | select(.name == "main.quote")] | length')" -ge 3 ]] && break; sleep 1
    done
  fi
  kill -TERM "$gp" 2>/dev/null
  for ((i = 0; i < 30; i++)); do alive "$gp" || break; sleep 0.5; done
  check "[$name] gotel exits within 15 s of SIGTERM" test "$(alive "$gp" && echo running || echo exited)" = exited
  alive "$gp" || wait "$gp" 2>/dev/null
  [[ -n "$bp" ]] && kill "$bp" 2>/dev/null
  if [[ "$name" == flush ]]; then
    for ((i = 0; i < 20; i++)); do
      [[ "$(spans_json "$svc" | jq '[.[] | select(.name == "main.quote")] | length')" -ge 3 ]] && break; sleep 0.5
    done
  fi
  spans_json "$svc" > "$TMP/$name.json"
  local j="$TMP/$name.json"
  check "[$name] 3 main.quote spans in Jaeger (got $(jq '[.[] | select(.name == "main.quote")] | length' "$j"))" \
    test "$(jq '[.[] | select(.name == "main.quote")] | length' "$j")" -eq 3
  check "[$name] quote(coffee, $qty): price.cents = $((450 * qty))" \
    test "$(jq -r --arg q "$qty" '[.[] | select(.name == "main.quote" and .tags.item == "coffee" and .tags.qty == $q) | .tags["price.cents"]] | join(",")' "$j")" = "$((450 * qty))"
  check "[$name] quote(unicorn) has status ERROR" \
    test "$(jq -r '[.[] | select(.name == "main.quote" and .tags.item == "unicorn") | (.tags["otel.status_code"] // "UNSET")] | join(",")' "$j")" = ERROR
  check "[$name] lookupInventory(tea) is a child of quote(tea), sku SKU-101" \
    test "$(jq '. as $all | [.[] | select(.name == "main.lookupInventory" and .tags.item == "tea" and .tags.sku == "SKU-101")
      | .parent as $p | $all[] | select(.id == $p and .name == "main.quote" and .tags.item == "tea")] | length' "$j")" -eq 1
  check "[$name] resource: service.name $svc, test.run=$name" \
    test "$(jq -r '[.[] | "\(.svc) \(.res["test.run"])"] | unique | join(";")' "$j")" = "$svc $name"
  if [[ $FAIL -gt 0 ]]; then say "[$name] gotel log (last 30 lines):"; tail -30 "$log" | sed 's/^/    /'; fi
}

run grpc  $((B + 81)) 5 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$JAEGER_OTLP_GRPC_PORT" OTEL_BSP_SCHEDULE_DELAY=200
run http  $((B + 82)) 6 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT" OTEL_BSP_SCHEDULE_DELAY=200
run flush $((B + 83)) 7 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT/v1/traces" OTEL_BSP_SCHEDULE_DELAY=60000

finish
