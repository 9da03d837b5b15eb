#!/usr/bin/env bash
# End-to-end ingest benchmark: the load generator against `callwatch sink` (decode and drop:
# the baseline) and against `callwatch serve`, in the same run, on this machine.
#
#   bash benches/ingest.sh            # 60 s per run
#   DURATION=20s bash benches/ingest.sh
#   RUNS="fsync paced" BELOW_RATE=100000 bash benches/ingest.sh
#   RUNS="fsync nopairing fsync nopairing fsync nopairing" bash benches/ingest.sh
#     (interleaved repeats: this machine's speed drifts between runs)
#   BIN=/path/to/callwatch BASELINE=/path/to/older/callwatch RUNS="baseline fsync baseline fsync" \
#     bash benches/ingest.sh
#     (a given build instead of this tree's, and an older build with every default on)
#   RATE=150000 RUNS="fsync nopairing fsync nopairing" bash benches/ingest.sh
#     (every run paced below saturation: nothing is refused, and the server's CPU per span
#     is what each part costs, steadier than spans/s at saturation)
#
# "server CPU µs/span" is the server's user and system time when the load ends, over the
# spans it accepted (the pairing wait's last calls are derived after that, uncounted).
# Prints one Markdown table row per run, ready for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-4}
BATCH=${BATCH:-1000}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/callwatch
fi
SERVE_BIN=$BIN
WORK=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$WORK"' EXIT

# Starts "$@" in the background; waits for its "listening otlp-grpc ADDR" line.
start() {
  local out=$WORK/$1.out
  shift
  "$@" >"$out" 2>"$out.err" &
  PID=$!
  for _ in $(seq 200); do
    ADDR=$(awk '/^listening otlp-grpc /{print $3}' "$out")
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  echo "server did not start: $(cat "$out.err")" >&2
  exit 1
}

load() {
  "$BIN" load --send-to "http://$ADDR" --duration "$DURATION" --connections "$CONNECTIONS" \
    --batch "$BATCH" "$@" | tail -n 1
}

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)" >&2

echo "| run | spans/s | ratio to sink | p50 ms | p99 ms | refused requests | Parquet bytes/span | peak RSS MiB | server CPU µs/span | every accepted span stored |"
echo "|---|---|---|---|---|---|---|---|---|---|"
start sink "$BIN" sink --otlp-grpc 127.0.0.1:0
BASE=$(load)
kill -INT $PID; wait $PID || true
BASE_RATE=$(field "$BASE" spans_per_sec)
echo "| sink (decode only, baseline) | $BASE_RATE | 1.00 | $(field "$BASE" p50_ms) | $(field "$BASE" p99_ms) | $(field "$BASE" errors) | - | - | - | - |"

# run_serve ID LABEL [serve flags...]
run_serve() {
  local id=$1 name=$2
  shift 2
  # A run may be repeated (RUNS="fsync nopairing fsync nopairing"): each gets its own data.
  RUN_COUNT=$((${RUN_COUNT:-0} + 1))
  local data=$WORK/data-$id-$RUN_COUNT
  start "serve-$id-$RUN_COUNT" "$SERVE_BIN" serve --data-dir "$data" --otlp-grpc 127.0.0.1:0 \
    --otlp-http 127.0.0.1:0 --http 127.0.0.1:0 "$@"
  local result
  result=$(load ${RATE:+--rate $RATE})
  local peak_kib cpu_ticks
  peak_kib=$(awk '/VmHWM/{print $2}' /proc/$PID/status)
  # utime and stime, fields 14 and 15 (the name in field 2 has no spaces).
  cpu_ticks=$(awk '{print $14 + $15}' /proc/$PID/stat)
  kill -TERM $PID; wait $PID
  local accepted rows bytes
  accepted=$(field "$result" accepted)
  read -r rows bytes < <(python3 -c "
import glob,json,sys
segments=[s for m in glob.glob(sys.argv[1] + '/_callwatch/nodes/*/manifest.json')
          for s in json.load(open(m))['segments']]
spans=[s for s in segments if s.get('table', 'spans') == 'spans']
print(sum(s['rows'] for s in spans), sum(s['bytes'] for s in spans))" \
    "$data")
  local rate
  rate=$(field "$result" spans_per_sec)
  python3 - "$name" "$rate" "$BASE_RATE" "$result" "$rows" "$bytes" "$accepted" "$peak_kib" \
    "$cpu_ticks" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, rate, base, result, rows, size, accepted, peak, ticks, per_second = sys.argv[1:]
cpu_us = int(ticks) / int(per_second) * 1e6 / max(int(accepted), 1)
r = json.loads(result)
stored = "yes" if int(rows) == int(accepted) else f"NO ({rows} of {accepted})"
print(f"| {name} | {float(rate):.0f} | {float(rate)/float(base):.2f} | {r['p50_ms']} | {r['p99_ms']} "
      f"| {r['errors']} | {int(size)/max(int(rows),1):.1f} | {int(peak)/1024:.0f} | {cpu_us:.2f} | {stored} |")
PY
}

BELOW_RATE=${BELOW_RATE:-150000}
RUNS=${RUNS:-fsync nopairing nofsync paced}
for run in $RUNS; do
  case $run in
    fsync) run_serve fsync "serve, WAL fsync always" ;;
    nopairing) run_serve nopairing "serve, WAL fsync always, no call pairing" --no-pairing ;;
    nofsync) run_serve nofsync "serve, WAL fsync never" --wal-fsync never ;;
    paced) RATE=$BELOW_RATE run_serve paced "serve, paced at $BELOW_RATE spans/s (below saturation)" ;;
    baseline)
      SERVE_BIN=${BASELINE:?BASELINE=/path/to/older/callwatch} run_serve baseline "older build, every default on"
      SERVE_BIN=$BIN
      ;;
    *) echo "unknown run $run: use fsync, nopairing, nofsync, paced, baseline" >&2; exit 2 ;;
  esac
done
