#!/bin/bash
# Manual check of GOTEL_PROPAGATION=inject through the socket (as root, from this folder):
#   GOTEL=/path/to/gotel ./manual-check.sh && ./check.py
# builds server and client (GO=go binary), runs them in their own cgroup v2 directory, traces the
# client with gotel (console exporter into $D/spans.jsonl) and leaves what each side saw in $D.
# Env: ROUNDS (3), WORKERS (1), WARM=1 (a round before gotel attaches), STOP_AFTER=secs (stop gotel
# with SIGTERM while the client keeps going), UNTRACED=1 (a second, untraced client in the same cgroup).
set -eu
cd "$(dirname "$0")"
GOTEL=${GOTEL:?path of the gotel binary}
D=${D:-/tmp/gotel-propagation}
GO=${GO:-go}
mkdir -p $D
$GO build -o $D/server ./server
$GO build -o $D/client ./client
set +e
ROUNDS=${ROUNDS:-3}; WORKERS=${WORKERS:-1}; INTERVAL=${INTERVAL:-100ms}
CG=${CG:-$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)/gotel-propagation-check}
mkdir -p $CG $D
rm -f $D/start $D/*.jsonl $D/gotel.log
$D/server -addr 127.0.0.1:39101 > $D/server.jsonl 2> $D/server.log &
SPID=$!
sleep 0.3
WARMFLAG=""; [ "${WARM:-}" = 1 ] && WARMFLAG=-warm
$D/client -server http://127.0.0.1:39101 -rounds $ROUNDS -workers $WORKERS -interval $INTERVAL $WARMFLAG -start-file $D/start > $D/client.jsonl &
CPID=$!
echo $CPID > $CG/cgroup.procs
if [ "${UNTRACED:-}" = 1 ]; then
  $D/server -addr 127.0.0.1:39102 > $D/untraced-server.jsonl 2>/dev/null &
  SPID="$SPID $!"
  sleep 0.2
  $D/client -server http://127.0.0.1:39102 -rounds $ROUNDS -interval $INTERVAL -start-file $D/start > $D/untraced.jsonl &
  UPID=$!
  echo $UPID > $CG/cgroup.procs
fi
sleep 0.3
GOTEL_PROPAGATION=inject OTEL_TRACES_EXPORTER=console GOTEL_LIBRARIES=http.client GOTEL_READY_FILE=$D/start \
  RUST_LOG=${RUST_LOG:-info} $GOTEL --pid $CPID > $D/spans.jsonl 2> $D/gotel.log &
GPID=$!
if [ -n "${STOP_AFTER:-}" ]; then sleep $STOP_AFTER; kill -TERM $GPID; fi
wait $GPID; echo "gotel exit: $?"
wait $CPID; echo "client exit: $?"
[ -n "${UPID:-}" ] && wait $UPID
kill $SPID
