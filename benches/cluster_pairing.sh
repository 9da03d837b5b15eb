#!/usr/bin/env bash
# How many calls of the demo recording each edge keeps when it is split by trace id over N
# collectors (as the OpenTelemetry Collector's loadbalancing exporter splits it), against
# one collector, read from a query node over the collectors' shared segments.
#
#   BIN=target/release/callwatch COLLECTORS="1 2 3" bash benches/cluster_pairing.sh
set -euo pipefail
BIN=${BIN:-target/release/callwatch}
RECORDING=${RECORDING:-sample-data/full.jsonl}
WORK=$(mktemp -d)
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# Starts `callwatch serve ARGS…` named $1, its addresses in $WORK/$1.out; returns once it
# listens.
start() {
    local name=$1; shift
    "$BIN" serve --data-dir "$WORK/$name" --http 127.0.0.1:0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    PIDS+=($!)
    for _ in $(seq 100); do
        grep -q "^listening http" "$WORK/$name.out" 2>/dev/null && break
        sleep 0.1
    done
}
address() { grep "^listening $2 " "$WORK/$1.out" | awk '{print $3}'; }

for n in ${COLLECTORS:-1 2 3}; do
    bucket="$WORK/bucket-$n"
    mkdir -p "$bucket"
    urls=()
    for i in $(seq "$n"); do
        start "c$n-$i" --role ingest --storage "file://$bucket" --node-id "collector-$i" \
            --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
            --pairing-wait 1s --flush-interval 1s --refresh-interval 1s
        urls+=("http://$(address "c$n-$i" otlp-grpc)")
    done
    start "q$n" --role query --storage "file://$bucket" --refresh-interval 1s
    (IFS=,; "$BIN" replay "$RECORDING" --send-to "${urls[*]}" >/dev/null)
    # The batch consumer's orphans: its wait, a flush, a refresh, then the producer's flush
    # and the query node's refresh.
    sleep 12
    now=$(date +%s%3N)
    curl -s "http://$(address "q$n" http)/api/v1/graph?from=$((now - 3600000))&to=$((now + 3600000))" |
        python3 -c '
import json, sys
n = sys.argv[1]
for e in sorted(json.load(sys.stdin)["edges"], key=lambda e: (e["source"], e["target"])):
    print("\t".join([n + " collectors", e["source"] + " -> " + e["target"], e["call_type"], str(e["calls"])]))
' "$n"
done
