#!/usr/bin/env bash
# Heavy pages against ingest at a real platform's size: a generated platform of 200
# services (`callwatch load --services 200`), its traffic sent for 20 s without pages and
# 20 s while two clients ask for the service map (`/graph`); /healthz asked every 100 ms
# meanwhile, and the overview and /api/v1/graph asked once while the maps are laid out.
#
#   bash benches/platform_pages.sh
#   BIN=/path/to/callwatch SERVICES=300 bash benches/platform_pages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SERVICES=${SERVICES:-200}
source benches/common.sh
release_bin
WORK=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT

start_server "$BIN"
load() {
  "$BIN" load --send-to "http://$GRPC" --duration "$1" --services "$SERVICES" 2>/dev/null | tail -n 1
}

load 8s >/dev/null
# Past the pairing wait, so every edge is in the graph.
sleep 12
curl -s "http://$HTTP/api/v1/graph" | python3 -c "
import json, sys
g = json.load(sys.stdin)
print(f\"graph: {len(g['nodes'])} nodes, {len(g['edges'])} edges\")"
echo "load, no pages: $(load 20s)"
for _ in 1 2; do
  (curl -s -o /dev/null -m 600 -w "/graph: %{http_code} after %{time_total} s\n" \
    "http://$HTTP/graph" >>"$WORK/graphs") &
done
sleep 2
(for _ in $(seq 200); do
  curl -s -o /dev/null -m 5 -w '%{time_total}\n' "http://$HTTP/healthz" || echo fail
  sleep 0.1
done) >"$WORK/healthz" &
HEALTHZ=$!
echo "load, two /graph views running: $(load 20s)"
curl -s -o /dev/null -m 60 -w "overview while they run: %{http_code} after %{time_total} s\n" \
  "http://$HTTP/"
curl -s -o /dev/null -m 60 -w "/api/v1/graph while they run: %{http_code} after %{time_total} s\n" \
  "http://$HTTP/api/v1/graph"
wait $HEALTHZ
echo "/healthz: $(grep -c . "$WORK/healthz") asked, $(grep -c fail "$WORK/healthz" || true) unanswered," \
  "slowest $(grep -v fail "$WORK/healthz" | sort -n | tail -n 1) s"
if [ -s "$WORK/graphs" ]; then
  cat "$WORK/graphs"
else
  echo "/graph: both views still laying out when the run ended"
fi
