#!/usr/bin/env bash
# Freshness under load: how long after its span is acknowledged a reported breaker state
# and an inferred one are shown by /api/v1/breakers, and a paired call by /api/v1/graph, while `callwatch load`
# sends a generated platform of SERVICES services at about half the rate the server takes
# unpaced (measured first, in the same run).
#
#   bash benches/freshness.sh
#   BIN=… SERVICES=200 PROBES=40 bash benches/freshness.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
SERVICES=${SERVICES:-200}
PROBES=${PROBES:-40}
WORK=$(mktemp -d)
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"

start saturation
full=$("$BIN" load --send-to "http://$GRPC" --duration 30s --services "$SERVICES" | tail -1 |
  python3 -c 'import json,sys; print(int(json.load(sys.stdin)["spans_per_sec"]))')
stop "$PID"
half=$((full / 2))
echo "unpaced: $full spans/s; paced at $half spans/s"

start paced
"$BIN" load --send-to "http://$GRPC" --duration 1h --services "$SERVICES" --rate "$half" \
  >"$WORK/load.out" &
PIDS+=($!)
sleep 20
python3 benches/freshness.py "$HTTP" "$OTLP_HTTP" "$PROBES"
tail -2 "$WORK/load.out" | head -1
