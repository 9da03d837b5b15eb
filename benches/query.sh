#!/usr/bin/env bash
# Query benchmark: loads about SPANS spans (default 10 million) with the load generator,
# restarts the server so everything is in Parquet segments, then times trace look-ups and a
# per-service percentile query through callwatch's HTTP API and in DuckDB over the same
# files, in the same run (benches/query.py).
#
#   bash benches/query.sh
#   SPANS=2000000 REPEAT=3 bash benches/query.sh
#
# Needs python3 with duckdb (pip install duckdb==2.0.0). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=${SPANS:-10000000}
cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/callwatch
WORK=$(mktemp -d)
DATA=$WORK/data
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT

# Starts the server; sets PID, GRPC and HTTP from its "listening" lines.
start() {
  "$BIN" serve --data-dir "$DATA" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
    --http 127.0.0.1:0 >"$WORK/out" 2>>"$WORK/err" &
  PID=$!
  for _ in $(seq 600); do
    GRPC=$(awk '/^listening otlp-grpc /{print $3}' "$WORK/out")
    HTTP=$(awk '/^listening http /{print $3}' "$WORK/out")
    [ -n "$GRPC" ] && [ -n "$HTTP" ] && return 0
    sleep 0.1
  done
  echo "server did not start: $(cat "$WORK/err")" >&2
  exit 1
}

stored() {
  curl -sf "http://$HTTP/api/v1/sql" -H 'content-type: text/plain' \
    -d 'SELECT count(*) FROM spans' | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0][0])'
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)" >&2
start
# Load in slices of 10 s until SPANS are stored, spread over the last 50 minutes so that the
# one-hour queries cover an hour of data, not the minute it took to send.
while [ "$(stored)" -lt "$SPANS" ]; do
  "$BIN" load --send-to "http://$GRPC" --duration 10s --connections 4 --batch 1000 \
    --backdate 50m >/dev/null
done
# A graceful stop flushes everything to Parquet; the restart replays nothing.
kill -TERM $PID
wait $PID
# Calls whose other half never comes (external APIs) wait out --pairing-wait after the
# restart; once settled, one more restart puts every call in Parquet for DuckDB to read.
start
for _ in $(seq 120); do
  curl -sf "http://$HTTP/metrics" | grep -q '^callwatch_pairer_pending_halves 0$' && break
  sleep 0.5
done
kill -TERM $PID
wait $PID
start
python3 benches/query.py "$HTTP" "$DATA"
kill -TERM $PID
wait $PID
