#!/usr/bin/env bash
# Trace look-ups through the API on what a busy platform leaves in segments: `callwatch load`
# sends DURATION of SERVICES services, the server restarts (everything flushed to Parquet),
# and 60 traces (the smallest id of each first byte) are read twice each through
# GET /api/v1/traces/{id}. BASELINE, if given, is another build measured the same way in
# the same run.
#
#   bash benches/lookup.sh
#   BIN=… BASELINE=… DURATION=25s bash benches/lookup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
SERVICES=${SERVICES:-200}
DURATION=${DURATION:-25s}
WORK=$(mktemp -d)
PIDS=()
trap 'kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"

# measure LABEL SERVER_BINARY: loads, restarts and times the look-ups.
measure() {
  local label=$1 server=$2 load=$BIN
  BIN=$server start "$label"
  "$load" load --send-to "http://$GRPC" --duration "$DURATION" --services "$SERVICES" >/dev/null
  stop "$PID"
  BIN=$server start "$label"
  echo -n "| $label | "
  python3 - "$HTTP" <<'PY'
import json, statistics, sys, time, urllib.request

http = sys.argv[1]


def sql(query):
    request = urllib.request.Request(
        f"http://{http}/api/v1/sql",
        data=json.dumps({"sql": query}).encode(),
        headers={"content-type": "application/json"},
    )
    return json.load(urllib.request.urlopen(request, timeout=300))


spans = sql("SELECT count(*) FROM spans")["rows"][0][0]
ids = [
    row[0]
    for row in sql(
        "SELECT min(trace_id) FROM spans GROUP BY substr(trace_id, 1, 2) ORDER BY 1 LIMIT 60"
    )["rows"]
]
times = []
for _ in range(2):
    for trace_id in ids:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://{http}/api/v1/traces/{trace_id}", timeout=120) as r:
            assert json.load(r)["spans"], trace_id
        times.append((time.perf_counter() - started) * 1000)
times.sort()
p90 = times[int(len(times) * 0.9)]
print(f"{spans} | {statistics.median(times):.1f} | {p90:.1f} | {times[-1]:.1f} |")
PY
  stop "$PID"
}

echo "| build | spans | p50 ms | p90 ms | max ms |"
echo "|---|---|---|---|---|"
if [ -n "${BASELINE:-}" ]; then
  measure baseline "$BASELINE"
fi
measure callwatch "$BIN"
