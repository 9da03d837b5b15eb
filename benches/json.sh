#!/usr/bin/env bash
# OTLP/JSON against protobuf: `callwatch load` sends the same spans as OTLP/HTTP JSON, as
# OTLP/HTTP protobuf and over gRPC to `callwatch serve`, and as JSON to a BASELINE build's
# serve (an older JSON decoder), each unpaced, in ROUNDS interleaved rounds.
#
#   BASELINE=/path/to/older/callwatch bash benches/json.sh
#   BIN=… BASELINE=… DURATION=30s ROUNDS=2 bash benches/json.sh
# Prints a row per run, then the medians and their ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
DURATION=${DURATION:-30s}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d)
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"

# run LABEL SERVER_BINARY PROTOCOL: one unpaced run on a new data directory.
run() {
  local label=$1 server=$2 protocol=$3 load=$BIN
  RUN=$((${RUN:-0} + 1))
  BIN=$server start "run-$RUN"
  BIN=$load
  local to="http://$OTLP_HTTP"
  [ "$protocol" = grpc ] && to="http://$GRPC"
  local result
  result=$("$BIN" load --send-to "$to" --protocol "$protocol" --duration "$DURATION" | tail -1)
  stop "$PID"
  rm -rf "$WORK/run-$RUN"
  echo "| $label | $protocol | $(echo "$result" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(int(r["spans_per_sec"]), "|", r["errors"])') |" |
    tee -a "$WORK/rows"
}

echo "| server | protocol | spans/s | refused requests |"
echo "|---|---|---|---|"
for _ in $(seq "$ROUNDS"); do
  run baseline "$BASELINE" http/json
  run callwatch "$BIN" http/json
  run callwatch "$BIN" http/protobuf
  run callwatch "$BIN" grpc
done
python3 - "$WORK/rows" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    runs.setdefault((cells[0], cells[1]), []).append(int(cells[2]))
median = {key: statistics.median(values) for key, values in runs.items()}
json = median[("callwatch", "http/json")]
print()
for (server, protocol), value in median.items():
    print(f"median {server} {protocol}: {value:,.0f} spans/s")
print(f"JSON against the baseline's JSON: {json / median[('baseline', 'http/json')]:.2f}x")
print(f"JSON against OTLP/HTTP protobuf: {json / median[('callwatch', 'http/protobuf')]:.2f}")
print(f"JSON against gRPC: {json / median[('callwatch', 'grpc')]:.2f}")
PY
