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

# `serve` named $1 with its data in $WORK/$1 and the further flags; sets PID, GRPC, OTLP_HTTP
# and HTTP.
start() {
  local name=$1
  shift
  "$BIN" serve --data-dir "$WORK/$name" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
    --http 127.0.0.1:0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  PIDS+=($PID)
  for _ in $(seq 600); do
    grep -q '^listening http ' "$WORK/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  GRPC=$(awk '/^listening otlp-grpc /{print $3}' "$WORK/$name.out")
  OTLP_HTTP=$(awk '/^listening otlp-http /{print $3}' "$WORK/$name.out")
  HTTP=$(awk '/^listening http /{print $3}' "$WORK/$name.out")
}

# SIGTERM (a graceful stop flushes everything); sets STOPPED to the seconds it took.
stop() {
  local started
  started=$(date +%s%N)
  kill -TERM "$1"
  wait "$1" || true
  STOPPED=$(python3 -c "print(round(($(date +%s%N) - $started) / 1e9, 1))")
}

# moto's S3 server (the tests') with buckets $@ made, its stdin held open on fd 3; sets
# S3_PORT and exports the AWS_* variables that point object_store clients at it.
start_s3() {
  mkfifo "$WORK/s3-in"
  python3 tests/s3/server.py "$@" <"$WORK/s3-in" >"$WORK/s3-out" &
  PIDS+=($!)
  exec 3>"$WORK/s3-in"
  for _ in $(seq 100); do [ -s "$WORK/s3-out" ] && break; sleep 0.1; done
  S3_PORT=$(head -1 "$WORK/s3-out")
  export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ENDPOINT=http://127.0.0.1:$S3_PORT
  export AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
}

# Copies the segments and manifests of data directory $1 to the S3 server, under BUCKET/ROOT $2.
upload() {
  python3 - "$1" "$S3_PORT" "$2" <<'EOF'
import os, sys, boto3
root, port, target = sys.argv[1], sys.argv[2], sys.argv[3]
bucket, _, prefix = target.partition("/")
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
for top in ("spans", "calls", "_callwatch"):
    for directory, _, files in os.walk(os.path.join(root, top)):
        for name in files:
            path = os.path.join(directory, name)
            if "/_callwatch/pending" not in path:
                s3.upload_file(path, bucket, prefix + "/" + os.path.relpath(path, root))
EOF
}
