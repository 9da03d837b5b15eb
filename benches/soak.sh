#!/usr/bin/env bash
# The kill -9 soak: `callwatch load` sends near the machine's saturation while the server is
# killed with SIGKILL KILLS times (20) at random moments and started again each time, with
# pairing on, Parquet flushes every 2 s (so that kills land in flushes and compactions) and
# a retention pass over an hour of old spans. Then the server is stopped gently and
# benches/soak_check.py reads its segments with DuckDB and checks that
#   - every span the load generator saw acknowledged is stored exactly once,
#   - no call is in the calls table twice,
#   - the calls equal those the stored spans imply: every client span whose server span (its
#     child) is stored is one call, per edge;
#   - the graph of the soak's window equals that of a server that never crashed, sent the
#     same requests (`load --resend` of those acknowledged, and of those that failed but
#     were stored all the same).
#
#   bash benches/soak.sh
#   KILLS=5 RATE=50000 bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
KILLS=${KILLS:-20}
RATE=${RATE:-120000}
PYTHON=${PYTHON:-python3}
release_bin
WORK=$(mktemp -d /var/tmp/callwatch-soak.XXXXXX)
trap 'pkill -P $$ || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
"$PYTHON" -c 'import duckdb' 2>/dev/null || {
  echo "benches/soak_check.py needs DuckDB: pip install duckdb (or PYTHON=venv/bin/python)" >&2
  exit 1
}

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
serve() {
  "$BIN" serve --data-dir "$WORK/data" --otlp-grpc "127.0.0.1:$GRPC_PORT" \
    --otlp-http 127.0.0.1:0 --http "127.0.0.1:$HTTP_PORT" --flush-interval 2s \
    --flush-spans 100000 --retention 2h >>"$WORK/out" 2>>"$WORK/err" &
  SERVER=$!
  for _ in $(seq 1200); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the server did not come up: $(tail -5 "$WORK/err")" >&2
  exit 1
}

# Old spans for retention to delete while the soak runs: three hours ago and older.
serve
"$BIN" load --send-to "http://127.0.0.1:$GRPC_PORT" --duration 5s --rate 20000 \
  --backdate 4h --seed 99 >/dev/null
kill -TERM "$SERVER"
wait "$SERVER" || true

# Long enough for every kill: 4–12 s apart, and a few seconds to start again each time.
LOAD_SECONDS=$((KILLS * 15 + 20))
serve
"$BIN" load --send-to "http://127.0.0.1:$GRPC_PORT" --duration "${LOAD_SECONDS}s" \
  --rate "$RATE" --connections 4 --acked-ids "$WORK/acked" --sent-log "$WORK/sent" \
  >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD=$!
started=$(date +%s)
# After the old spans sent just before (spread up to the moment they were sent).
from=$(date -u -d "@$((started + 5))" +%Y-%m-%dT%H:%M:%SZ)
restarts=()
# Flushes, compactions, segments expired and halves the pairer's bound dropped, by each
# server before its kill.
counted() {
  curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" | awk '
    /^callwatch_flushes_total /{f=$2} /^callwatch_compactions_total /{c=$2}
    /^callwatch_segments_expired_total /{e=$2} /^traces_service_graph_dropped_spans_total /{d=$2}
    END { print f+0, c+0, e+0, d+0 }'
}
totals=(0 0 0 0)
for kill in $(seq "$KILLS"); do
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 4 + rand() * 8 }')"
  read -r f c e d < <(counted || echo 0 0 0 0)
  totals=($((totals[0] + ${f%.*})) $((totals[1] + ${c%.*})) $((totals[2] + ${e%.*})) $((totals[3] + ${d%.*})))
  kill -KILL "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  began=$(date +%s.%N)
  serve
  restarts+=("$(awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')")
  echo "kill $kill at $(($(date +%s) - started)) s (pairer had dropped ${d%.*} halves); up again in ${restarts[-1]} s"
done
wait "$LOAD"
kill -TERM "$SERVER"
wait "$SERVER" || true
tail -n 1 "$WORK/load.out"
echo "restart seconds: ${restarts[*]}"
echo "before the kills: ${totals[0]} flushes, ${totals[1]} compactions, ${totals[2]} segments expired, ${totals[3]} waiting halves dropped by --pairing-max-pending; WAL replays at start: $(grep -c 'replayed the write-ahead log' "$WORK/err" || true)"
to=$(date -u -d "@$(($(date +%s) + 60))" +%Y-%m-%dT%H:%M:%SZ)
"$PYTHON" benches/soak_check.py "$WORK/data" "$WORK/acked" "$WORK/sent" "$WORK/resend"

# The same spans replayed into a server that never crashed: the graphs must be equal.
serve
CRASHED=$SERVER
CRASHED_HTTP=$HTTP_PORT
"$BIN" serve --data-dir "$WORK/clean" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
  --http 127.0.0.1:0 >"$WORK/clean.out" 2>"$WORK/clean.err" &
CLEAN=$!
for _ in $(seq 600); do grep -q '^listening http ' "$WORK/clean.out" 2>/dev/null && break; sleep 0.05; done
CLEAN_GRPC=$(awk '/^listening otlp-grpc /{print $3}' "$WORK/clean.out")
CLEAN_HTTP=$(awk '/^listening http /{print $3}' "$WORK/clean.out")
"$BIN" load --send-to "http://$CLEAN_GRPC" --resend "$WORK/resend"
# Past the pairing wait, so that halves without a partner have become calls to virtual nodes.
sleep 15
"$PYTHON" benches/soak_graphs.py "http://127.0.0.1:$CRASHED_HTTP" "http://$CLEAN_HTTP" "$from" "$to"
kill -TERM "$CRASHED" "$CLEAN"
wait "$CRASHED" "$CLEAN" || true
