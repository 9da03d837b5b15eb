#!/usr/bin/env bash
# What readers cost ingest: `callwatch load` against `callwatch serve` with 0, 1 and 4
# runaway SQL queries running the whole time (each client sends the next as soon as the
# last is stopped at --query-timeout), interleaved, on this machine; a generated platform
# of 200 services whose service map page is asked for again and again; and /healthz
# latency, asked every 100 ms, meanwhile.
#
#   bash benches/isolation.sh
#   DURATION=30s ROUNDS=2 bash benches/isolation.sh
#   BASELINE_BIN=/path/to/older/callwatch RUNS="baseline 0" ROUNDS=3 bash benches/isolation.sh
#     (an older build with no queries against this one: what the read runtime costs ingest)
#   BIN=/path/to/callwatch bash benches/isolation.sh   (that binary, without building)
#
# Prints one Markdown table row per run, ready for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30s}
ROUNDS=${ROUNDS:-2}
CONNECTIONS=${CONNECTIONS:-4}
BATCH=${BATCH:-1000}
QUERY_TIMEOUT=${QUERY_TIMEOUT:-10s}
RUNAWAY="SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b"
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/callwatch
fi
WORK=$(mktemp -d)
trap 'touch "$WORK/stop"; pkill -P $$ || true; rm -rf "$WORK"' EXIT

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# run BINARY LABEL QUERIES [PAGE]: QUERIES clients each sending the runaway query, or
# asking for PAGE (a dashboard path), back to back.
run() {
  local bin=$1 label=$2 queries=$3 page=${4:-}
  RUN_COUNT=$((${RUN_COUNT:-0} + 1))
  local dir=$WORK/run-$RUN_COUNT
  mkdir -p "$dir"
  "$bin" serve --data-dir "$dir/data" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
    --http 127.0.0.1:0 --query-timeout "$QUERY_TIMEOUT" >"$dir/out" 2>"$dir/err" &
  local pid=$! grpc="" http=""
  for _ in $(seq 200); do
    grpc=$(awk '/^listening otlp-grpc /{print $3}' "$dir/out")
    http=$(awk '/^listening http /{print $3}' "$dir/out")
    [ -n "$grpc" ] && [ -n "$http" ] && break
    sleep 0.05
  done
  rm -f "$WORK/stop"
  local i
  for i in $(seq "$queries"); do
    (while [ ! -f "$WORK/stop" ]; do
      if [ -n "$page" ]; then
        curl -s --max-time 120 -o /dev/null -w '%{http_code} %{time_total}\n' \
          "http://$http$page" >>"$dir/pages" || echo "fail" >>"$dir/pages"
      else
        curl -s --max-time 120 -X POST "http://$http/api/v1/sql" -H 'content-type: text/plain' \
          --data "$RUNAWAY" >>"$dir/queries" || true
        echo >>"$dir/queries"
      fi
    done) &
  done
  # /healthz every 100 ms: one latency in ms a line ("fail" when it did not answer in 5 s).
  (while [ ! -f "$WORK/stop" ]; do
    curl -s -o /dev/null --max-time 5 -w '%{time_total}\n' "http://$http/healthz" \
      >>"$dir/healthz" || echo fail >>"$dir/healthz"
    sleep 0.1
  done) &
  sleep 1
  local result
  result=$("$bin" load --send-to "http://$grpc" --duration "$DURATION" \
    --connections "$CONNECTIONS" --batch "$BATCH" ${SERVICES:+--services $SERVICES} | tail -n 1)
  touch "$WORK/stop"
  local stopped
  if [ -n "$page" ]; then
    stopped="pages: $(awk '{n++; if ($1 == 200) ok++} END {printf "%d of %d answered", ok, n}' "$dir/pages" 2>/dev/null)"
  else
    stopped=$(grep -c "time limit" "$dir/queries" 2>/dev/null || true)
  fi
  kill -TERM $pid
  wait $pid || true
  sleep 0.5
  python3 - "$label" "$queries" "$result" "$dir/healthz" "${stopped:-0}" <<'PY'
import json, sys
label, queries, result, healthz, stopped = sys.argv[1:]
r = json.loads(result)
lines = [l.strip() for l in open(healthz) if l.strip()]
fails = sum(1 for l in lines if l == "fail")
ms = sorted(float(l) * 1000 for l in lines if l != "fail")
p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
print(f"| {label} | {queries} | {float(r['spans_per_sec']):.0f} | {r['p50_ms']} | {r['p99_ms']} "
      f"| {r['errors']} | {stopped} | {len(lines)} | {fails} | {p99:.1f} | {max(ms) if ms else float('nan'):.1f} |")
PY
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)" >&2
echo "| build | runaway queries | spans/s | p50 ms | p99 ms | load errors | queries stopped at the limit | /healthz asked | /healthz unanswered | /healthz p99 ms | /healthz max ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
# One round: each run of RUNS in turn. `baseline` is BASELINE_BIN with no queries; 0, 1, 4
# are this build with that many runaway queries; `platform` is the service map of a
# generated platform of 200 services, asked for by 2 clients back to back while the
# platform's traffic comes in, after the same traffic without it.
RUNS=${RUNS:-${BASELINE_BIN:+baseline} 0 1 4 platform}
for _ in $(seq "$ROUNDS"); do
  for r in $RUNS; do
    case $r in
      baseline) run "$BASELINE_BIN" "baseline build" 0 ;;
      0 | 1 | 4) run "$BIN" "this build" "$r" ;;
      platform)
        SERVICES=200 run "$BIN" "this build, 200 services" 0
        SERVICES=200 run "$BIN" "this build, 200 services, /graph" 2 "/graph"
        ;;
      *) echo "unknown run $r: use baseline, 0, 1, 4, platform" >&2; exit 2 ;;
    esac
  done
done
