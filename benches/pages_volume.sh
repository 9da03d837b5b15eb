#!/usr/bin/env bash
# The service and edge pages over an hour of the demo platform's traffic (`callwatch load
# --backdate 60m`: millions of calls spread over the past hour), for two builds in the same
# run on the same data: BEFORE (e.g. the previous release binary) and BIN (this one). Each
# serves the data directory in turn; each page is asked 5 times and the median kept.
#
#   BEFORE=/path/to/old/callwatch bash benches/pages_volume.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
BEFORE=${BEFORE:?the build to compare with}
DURATION=${DURATION:-30s}
WORK=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT

start() {
  start_server "$1" --pairing-wait 2s
}
stop() {
  kill -INT "$SERVER"
  wait "$SERVER" || true
}
median_ms() {
  for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -m 600 -w '%{time_total}\n' "http://$HTTP$1"
  done | sort -n | awk '{a[NR]=$1} END {printf "%.0f", a[3] * 1000}'
}

start "$BIN"
"$BIN" load --send-to "http://$GRPC" --duration "$DURATION" --backdate 60m 2>/dev/null | tail -n 1
echo "calls stored: $(settled_calls)"
stop

EDGE='source=order-service&target=payment-service'
PAGES=("/services/order-service?range=1h&refresh=off" "/edges?$EDGE&range=1h&refresh=off")
for build in BEFORE BIN; do
  start "${!build}"
  NOW_MS=$(date +%s%3N)
  HOUR="from=$((NOW_MS - 3600000))&to=$NOW_MS"
  # The first answer computes the stored pieces of every segment: not timed.
  curl -s -o /dev/null "http://$HTTP/api/v1/graph?$HOUR"
  for page in "${PAGES[@]}" "/api/v1/edges?$EDGE&$HOUR" "/api/v1/services/order-service?$HOUR" "/api/v1/graph?$HOUR"; do
    echo "$build ${page%%\?*} $(median_ms "$page")"
  done
  stop
done | python3 -c "
import sys
rows = {}
for line in sys.stdin:
    build, page, ms = line.split()
    rows.setdefault(page, {})[build] = float(ms)
print(f\"{'page':32} {'before ms':>10} {'after ms':>10} {'ratio':>6}\")
for page, t in rows.items():
    print(f\"{page:32} {t['BEFORE']:10.0f} {t['BIN']:10.0f} {t['BIN'] / t['BEFORE']:6.2f}\")
"
