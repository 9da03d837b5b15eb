# Shared by the bench scripts (sourced): the binary to time, a server on free loopback
# ports, and a wait for the call pairer to catch up with what was sent.

# BIN as given, or a release build of this checkout.
release_bin() {
  if [ -z "${BIN:-}" ]; then
    cargo build --release --locked --quiet
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/callwatch
  fi
}

# `$1 serve` with its data in $WORK/data and the further flags given; sets SERVER (its
# pid), GRPC and HTTP (its addresses).
start_server() {
  local bin=$1
  shift
  "$bin" serve --data-dir "$WORK/data" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
    --http 127.0.0.1:0 "$@" >"$WORK/out" 2>"$WORK/err" &
  SERVER=$!
  for _ in $(seq 600); do
    grep -q '^listening http ' "$WORK/out" 2>/dev/null && break
    sleep 0.05
  done
  GRPC=$(awk '/^listening otlp-grpc /{print $3}' "$WORK/out")
  HTTP=$(awk '/^listening http /{print $3}' "$WORK/out")
}

# Waits until the calls table stops growing (pairing runs behind ingest); prints its count.
settled_calls() {
  local last=-1 now
  for _ in $(seq 120); do
    now=$(curl -s "http://$HTTP/api/v1/sql" -d 'SELECT count(*) FROM calls' |
      python3 -c "import json,sys; print(json.load(sys.stdin)['rows'][0][0])")
    [ "$now" = "$last" ] && break
    last=$now
    sleep 5
  done
  echo "$last"
}
