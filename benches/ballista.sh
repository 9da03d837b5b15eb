#!/usr/bin/env bash
# Distributed SQL on Apache DataFusion Ballista, with a real scheduler and executor processes
# built from crates.io, over segments in an S3 bucket (the tests' moto server):
#  1. the fixed query list of tests/sql/distributed.sql answers the same on a query node
#     with --ballista as on one without;
#  2. over SPANS spans: the per-edge p50/p95/p99 of every call, and spans by service and
#     hour, timed on one query node alone, on Ballista with 1 executor and with 2, and in
#     DuckDB over the same Parquet files (on the local disk: DuckDB reads no S3 offline),
#     with the CPU seconds each executor spent and the bytes it shuffled.
#
#   bash benches/ballista.sh
#   BIN=… SPANS=5000000 REPEAT=3 DATA=/var/tmp/ballista-data bash benches/ballista.sh
#  3. the graph of the last 6 hours (all of it) on a query node with --ballista, with
#     engine=local and engine=ballista: whether the edges agree, and the time and CPU of each.
# DATA keeps the generated spans for a later run; BALLISTA is where the binaries go;
# LIST=0 skips step 1; GRAPH_ONLY=1 runs step 3 alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
SPANS=${SPANS:-50000000}
REPEAT=${REPEAT:-3}
BALLISTA=${BALLISTA:-/var/tmp/ballista-55}
WORK=$(mktemp -d)
DATA=${DATA:-$WORK/big}
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

if [ ! -x "$BALLISTA/bin/ballista-executor" ]; then
  cargo install --locked --quiet --version 55.0.0 --root "$BALLISTA" \
    ballista-scheduler ballista-executor
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"

# SPANS spans of the generated platform over the last hours, flushed into $DATA.
if [ ! -f "$DATA/.complete" ]; then
  WORK_SAVED=$WORK
  WORK=$(dirname "$DATA")
  start "$(basename "$DATA")" --node-id big --flush-spans 2000000
  WORK=$WORK_SAVED
  # 30 s of load at a time, each 10 minutes later than the one before, from 5 hours ago.
  minutes=300
  while [ "$(curl -s "http://$HTTP/api/v1/sql" -d 'SELECT count(*) FROM spans' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])')" -lt "$SPANS" ]; do
    "$BIN" load --send-to "http://$GRPC" --duration 30s --services 200 --seed "$minutes" \
      --backdate "${minutes}m" >/dev/null
    minutes=$((minutes > 10 ? minutes - 10 : 0))
  done
  stop "$PID"
  echo "generated in $DATA (stopped in $STOPPED s)"
  touch "$DATA/.complete"
fi
start_s3 bench
upload "$DATA" bench/big
echo "segments: $(du -sh "$DATA/spans" | cut -f1) of spans, $(du -sh "$DATA/calls" | cut -f1) of calls"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A Ballista scheduler and $1 executors of $2 vcores each; sets SCHEDULER and EXECUTORS.
cluster() {
  local port
  port=$(free_port)
  "$BALLISTA/bin/ballista-scheduler" --bind-host 127.0.0.1 --external-host 127.0.0.1 \
    --bind-port "$port" >"$WORK/scheduler.log" 2>&1 &
  PIDS+=($!)
  SCHEDULER_PID=$!
  SCHEDULER=127.0.0.1:$port
  for _ in $(seq 100); do curl -s "http://$SCHEDULER/api/state" >/dev/null && break; sleep 0.1; done
  EXECUTORS=()
  for n in $(seq "$1"); do
    mkdir -p "$WORK/executor-$n"
    "$BALLISTA/bin/ballista-executor" --bind-host 127.0.0.1 --external-host 127.0.0.1 \
      --bind-port "$(free_port)" --bind-grpc-port "$(free_port)" --bind-health-port "$(free_port)" \
      --scheduler-host 127.0.0.1 --scheduler-port "$port" --vcores "$2" \
      --memory-pool-size 2GiB --work-dir "$WORK/executor-$n" >"$WORK/executor-$n.log" 2>&1 &
    PIDS+=($!)
    EXECUTORS+=($!)
  done
  for _ in $(seq 100); do
    [ "$(curl -s "http://$SCHEDULER/api/executors" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" = "$1" ] && return
    sleep 0.2
  done
  tail -5 "$WORK"/executor-*.log
  echo "the executors did not register" >&2
  exit 1
}

# Waits until process $1 has used less than 0.2 s of CPU over 5 s: a query node makes the
# graph's pieces of every segment in the background after it starts.
quiet() {
  local ticks before
  ticks=$(getconf CLK_TCK)
  for _ in $(seq 120); do
    before=$(awk '{print $14 + $15}' "/proc/$1/stat")
    sleep 5
    [ $(($(awk '{print $14 + $15}' "/proc/$1/stat") - before)) -lt $((ticks / 5)) ] && return
  done
}

flags=(--role query --storage s3://bench/big --query-timeout 1200s --query-memory 4GiB
  --query-threads 2)
if [ "${GRAPH_ONLY:-0}" = 0 ]; then
  start local "${flags[@]}"
  LOCAL=$HTTP
  LOCAL_PID=$PID

  cluster 2 1
  start distributed "${flags[@]}" --ballista "df://$SCHEDULER"
  quiet "$LOCAL_PID"
  quiet "$PID"
  if [ "${LIST:-1}" = 1 ]; then
    echo "## 1. the fixed list, Ballista (2 executors) against one node"
    python3 benches/ballista.py same "$LOCAL" "$HTTP"
  fi

  echo "## 2. per-edge percentiles and spans by service and hour, medians of $REPEAT runs"
  python3 benches/ballista.py time "one node" "$LOCAL" "" "" "$REPEAT"
  python3 benches/ballista.py time "ballista, 2 executors" "$HTTP" \
    "$(IFS=,; echo "${EXECUTORS[*]}")" "$WORK/executor-1,$WORK/executor-2" "$REPEAT"
  kill -9 "$PID" "$SCHEDULER_PID" "${EXECUTORS[@]}"
  rm -rf "$WORK"/executor-*
  cluster 1 2
  start distributed-1 "${flags[@]}" --ballista "df://$SCHEDULER"
  quiet "$PID"
  python3 benches/ballista.py time "ballista, 1 executor" "$HTTP" \
    "$(IFS=,; echo "${EXECUTORS[*]}")" "$WORK/executor-1" "$REPEAT"
  kill -9 "$LOCAL_PID" "$PID" "$SCHEDULER_PID" "${EXECUTORS[@]}"
  python3 benches/ballista.py duckdb "$DATA" "$REPEAT"
fi

echo "## 3. the graph of the whole window, engine=local against engine=ballista (2 executors)"
rm -rf "$WORK"/executor-*
cluster 2 1
start graph "${flags[@]}" --ballista "df://$SCHEDULER"
quiet "$PID"
to_ms=$(($(date +%s) * 1000 + 60000))
NODE_PID=$PID python3 benches/ballista.py graph "$HTTP" $((to_ms - 6 * 3600 * 1000)) "$to_ms" \
  "$(IFS=,; echo "${EXECUTORS[*]}")" "$REPEAT"
