#!/usr/bin/env bash
# The service map at a large platform's size: a generated platform of 500 services
# (`callwatch load --services 500`, about 1,500 edges) with an hour of traffic backdated,
# then `/graph` timed against `/api/v1/graph` (the same graph as JSON: the baseline) in the
# same run. The first view lays the map out; later views reuse the layout of the same shape.
# The layout alone is read from the server's own log. Then the time to first paint and to
# interactive of `/graph` in headless Chromium (`benches/paint.py`; PAINT= skips it).
#
#   bash benches/map.sh
#   BIN=/path/to/callwatch SERVICES=300 bash benches/map.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=${SERVICES:-500}
source benches/common.sh
release_bin
WORK=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT

export CALLWATCH_LOG=info,callwatch_ui=debug
start_server "$BIN" --pairing-wait 2s

"$BIN" load --send-to "http://$GRPC" --duration 30s --services "$SERVICES" --backdate 60m \
  2>/dev/null | tail -n 1
settled_calls >/dev/null
# The API takes from/to (unix ms); the page takes range=1h.
NOW_MS=$(($(date +%s%3N)))
HOUR="from=$((NOW_MS - 3600000))&to=$NOW_MS"
curl -s "http://$HTTP/api/v1/graph?$HOUR" | python3 -c "
import json, sys
g = json.load(sys.stdin)
print(f\"graph: {len(g['nodes'])} nodes, {len(g['edges'])} edges, {sum(e['calls'] for e in g['edges'])} calls\")"

time_of() {
  curl -s -o /dev/null -m 600 -w '%{time_total}' "http://$HTTP$1"
}
api=(); first=""; again=()
for round in 1 2 3 4 5; do
  NOW_MS=$(($(date +%s%3N)))
  api+=("$(time_of "/api/v1/graph?from=$((NOW_MS - 3600000))&to=$NOW_MS")")
  if [ "$round" = 1 ]; then
    first=$(time_of '/graph?range=1h&refresh=off')
  else
    again+=("$(time_of '/graph?range=1h&refresh=off')")
  fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
API=$(median "${api[@]}")
AGAIN=$(median "${again[@]}")
python3 - "$API" "$first" "$AGAIN" <<'EOF'
import sys
api, first, again = map(float, sys.argv[1:])
print(f"/api/v1/graph (baseline), median of 5: {api * 1000:.1f} ms")
print(f"/graph, first view (lays out):       {first * 1000:.1f} ms, ratio {first / api:.2f}")
print(f"/graph, later views (median of 4):   {again * 1000:.1f} ms, ratio {again / api:.2f}")
EOF
grep 'laid out the service map' "$WORK/out" "$WORK/err" | sed 's/.*laid out/laid out/' | head -n 3 || true
curl -s "http://$HTTP/graph?range=1h&refresh=off" | wc -c | awk '{printf "page size: %.1f MiB\n", $1 / 1048576}'
# Time to first paint and to interactive in headless Chromium, against the overview page of
# the same platform (needs chromium and `pip install websocket-client`).
if [ -n "${PAINT-1}" ]; then
  python3 benches/paint.py "http://$HTTP" '/?range=1h&refresh=off' '/graph?range=1h&refresh=off'
fi
