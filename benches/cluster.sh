#!/usr/bin/env bash
# Segments in S3, in the same run as the same on the local disk:
#  1. ingest: spans/s of one collector with segments in the bucket against in --data-dir,
#     interleaved, ROUNDS rounds of SECONDS each, and how long the final flush takes;
#  2. freshness: a span acknowledged by a collector (--role ingest) until a query node
#     (--role query) answers it, p50 and p99, under load, with the default intervals;
#  3. queries: trace by id and the graph of the last hour on a query node over SPANS spans
#     in the bucket, against a query node over the same files on the local disk.
# The S3 server is the tests' (moto's server mode, from PyPI): Python, in memory.
#
#   bash benches/cluster.sh
#   BIN=… SPANS=2000000 SECONDS_EACH=20 bash benches/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
SPANS=${SPANS:-10000000}
SECONDS_EACH=${SECONDS_EACH:-30}
ROUNDS=${ROUNDS:-2}
PROBES=${PROBES:-60}
WORK=$(mktemp -d)
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# The S3 server, its buckets made; its stdin stays open on fd 3.
mkfifo "$WORK/s3-in"
python3 tests/s3/server.py bench <"$WORK/s3-in" >"$WORK/s3-out" &
PIDS+=($!)
exec 3>"$WORK/s3-in"
for _ in $(seq 100); do [ -s "$WORK/s3-out" ] && break; sleep 0.1; done
S3_PORT=$(head -1 "$WORK/s3-out")
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

# `serve` named $1 with its data in $WORK/$1 and the further flags; sets PID, GRPC, OTLP_HTTP
# and HTTP.
start() {
  local name=$1
  shift
  "$BIN" serve --data-dir "$WORK/$name" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
    --http 127.0.0.1:0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  PIDS+=($PID)
  for _ in $(seq 600); do
    grep -q '^listening http ' "$WORK/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  GRPC=$(awk '/^listening otlp-grpc /{print $3}' "$WORK/$name.out")
  OTLP_HTTP=$(awk '/^listening otlp-http /{print $3}' "$WORK/$name.out")
  HTTP=$(awk '/^listening http /{print $3}' "$WORK/$name.out")
}

# SIGTERM (a graceful stop flushes everything); sets STOPPED to the seconds it took.
stop() {
  local started
  started=$(date +%s%N)
  kill -TERM "$1"
  wait "$1" || true
  STOPPED=$(python3 -c "print(round(($(date +%s%N) - $started) / 1e9, 1))")
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
echo "## 1. ingest, ${SECONDS_EACH} s per run"
for round in $(seq "$ROUNDS"); do
  for where in disk s3; do
    flags=()
    [ "$where" = s3 ] && flags=(--storage "s3://bench/ingest-$round")
    start "ingest-$round-$where" "${flags[@]}"
    rate=$("$BIN" load --send-to "http://$GRPC" --duration "${SECONDS_EACH}s" | tail -1 |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["spans_per_sec"])')
    stop "$PID"
    echo "round $round $where: $rate spans/s, stopped (final flush) in ${STOPPED} s"
  done
done

echo "## 2. freshness, default --flush-interval 30s and --refresh-interval 10s"
start fresh-collector --role ingest --storage s3://bench/fresh --node-id collector-1
COLLECTOR=$PID
COLLECTOR_GRPC=$GRPC
COLLECTOR_OTLP_HTTP=$OTLP_HTTP
start fresh-query --role query --storage s3://bench/fresh
QUERY=$PID
QUERY_HTTP=$HTTP
"$BIN" load --send-to "http://$COLLECTOR_GRPC" --rate 50000 \
  --duration "$((PROBES * 2 + 60))s" >/dev/null &
LOAD=$!
python3 benches/cluster.py freshness "$COLLECTOR_OTLP_HTTP" "$QUERY_HTTP" "$PROBES" 2
wait "$LOAD" || true
stop "$COLLECTOR"
stop "$QUERY"

echo "## 3. queries over $SPANS spans"
start big --node-id big
while [ "$(curl -s "http://$HTTP/api/v1/sql" -d 'SELECT count(*) FROM spans' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])')" -lt "$SPANS" ]; do
  "$BIN" load --send-to "http://$GRPC" --duration 10s --backdate 50m >/dev/null
done
stop "$PID"
# The same files, into the bucket.
python3 - "$WORK/big" "$S3_PORT" <<'EOF'
import os, sys, boto3
root, port = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
for top in ("spans", "calls", "_callwatch"):
    for directory, _, files in os.walk(os.path.join(root, top)):
        for name in files:
            path = os.path.join(directory, name)
            if "/_callwatch/pending" not in path:
                s3.upload_file(path, "bench", "big/" + os.path.relpath(path, root))
EOF
start query-s3 --role query --storage s3://bench/big
S3_HTTP=$HTTP
start query-disk --role query --storage "file://$WORK/big"
DISK_HTTP=$HTTP
# Both make the graph's pieces of every segment in the background first.
for http in "$S3_HTTP" "$DISK_HTTP"; do
  for _ in $(seq 600); do
    curl -s "http://$http/metrics" | grep -q '^callwatch_pieces_hours{cache="graph"} [1-9]' && break
    sleep 0.5
  done
done
sleep 10
python3 benches/cluster.py queries "disk=$DISK_HTTP" "s3=$S3_HTTP"
