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

start_s3 bench

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
upload "$WORK/big" bench/big
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
