#!/usr/bin/env bash
# The service and edge pages over a long window of the demo platform's traffic (`callwatch
# load --backdate`: millions of calls spread over the past hour, or day), for BIN (this
# build) and, if given, BEFORE (e.g. the previous release binary), in the same run on the
# same data. Each serves the data directory in turn; each page's first view is timed (it
# reads what the pieces kept in the background lack), then the median of TIMES more (5).
# Each build is given the time its background task takes to make the stored hours' pieces
# after the start (printed) before the first view.
#
#   BEFORE=/path/to/old/callwatch bash benches/pages_volume.sh
#   BACKDATE=24h DURATION=16m RANGES="1h 24h" TIMES=3 bash benches/pages_volume.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
release_bin
BEFORE=${BEFORE:-}
DURATION=${DURATION:-30s}
BACKDATE=${BACKDATE:-60m}
RANGES=${RANGES:-1h}
TIMES=${TIMES:-5}
WORK=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT

start() {
  start_server "$1" --pairing-wait 2s
}
stop() {
  kill -INT "$SERVER"
  wait "$SERVER" || true
}
# Prints the first view's time, then the median of TIMES more.
first_and_median_ms() {
  curl -s -o /dev/null -m 600 -w '%{time_total}\n' "http://$HTTP$1" | awk '{printf "%.0f ", $1 * 1000}'
  for _ in $(seq "$TIMES"); do
    curl -s -o /dev/null -m 600 -w '%{time_total}\n' "http://$HTTP$1"
  done | sort -n | awk '{a[NR]=$1} END {printf "%.0f", a[int((NR + 1) / 2)] * 1000}'
}
# Waits until the background task has made the breakdown pieces of the stored hours (a
# build without them returns at once); prints how long that took.
warmed_after_s() {
  local began last=-1 now
  began=$(date +%s)
  for _ in $(seq 100); do
    now=$(curl -s "http://$HTTP/metrics" | awk '/^callwatch_pieces_hours\{cache="breakdowns"\}/{print $2}')
    [ -z "$now" ] && break
    [ "$now" = "$last" ] && break
    last=$now
    sleep 10
  done
  echo $(($(date +%s) - began))
}
seconds_of() {
  case $1 in *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; esac
}

start "$BIN"
"$BIN" load --send-to "http://$GRPC" --duration "$DURATION" --backdate "$BACKDATE" 2>/dev/null | tail -n 1
echo "calls stored: $(settled_calls)"
echo "rss after load: $(($(ps -o rss= -p "$SERVER") / 1024)) MiB"
stop

EDGE='source=order-service&target=payment-service'
for build in ${BEFORE:+BEFORE} BIN; do
  start "${!build}"
  echo "$build warm $(warmed_after_s)"
  for range in $RANGES; do
    NOW_MS=$(date +%s%3N)
    WINDOW="from=$((NOW_MS - $(seconds_of "$range") * 1000))&to=$NOW_MS"
    # The first answer computes the graph's pieces of every segment: not timed.
    curl -s -o /dev/null -m 600 "http://$HTTP/api/v1/graph?$WINDOW"
    for page in "/services/order-service?range=$range&refresh=off" \
      "/edges?$EDGE&range=$range&refresh=off" "/api/v1/edges?$EDGE&$WINDOW" \
      "/api/v1/services/order-service?$WINDOW" "/api/v1/graph?$WINDOW"; do
      echo "$build $range ${page%%\?*} $(first_and_median_ms "$page")"
    done
  done
  echo "$build rss $(($(ps -o rss= -p "$SERVER") / 1024))"
  stop
done | python3 -c "
import sys
rows, rss = {}, {}
for line in sys.stdin:
    parts = line.split()
    if parts[1] == 'rss':
        rss[parts[0]] = parts[2]
        continue
    if parts[1] == 'warm':
        print(f'{parts[0]}: breakdown pieces of the stored hours made {parts[2]} s after start')
        continue
    build, range_, page, first, median = parts
    rows.setdefault((range_, page), {})[build] = (float(first), float(median))
builds = [b for b in ('BEFORE', 'BIN') if b in rss]
head = ''.join(f'{b + \" first\":>13} {b + \" ms\":>10}' for b in builds)
print(f\"{'range':6} {'page':32}{head}\" + (f\" {'ratio':>6}\" if len(builds) == 2 else ''))
for (range_, page), t in rows.items():
    cells = ''.join(f'{t[b][0]:13.0f} {t[b][1]:10.0f}' for b in builds)
    ratio = f\" {t['BIN'][1] / t['BEFORE'][1]:6.2f}\" if len(builds) == 2 else ''
    print(f'{range_:6} {page:32}{cells}{ratio}')
print('rss MiB after the pages: ' + ', '.join(f'{b} {rss[b]}' for b in builds))
"
