#!/usr/bin/env bash
# Runs each property test over untrusted input (OTLP protobuf, JSON and gzip bodies,
# TraceQL, times, durations, trace ids, the SQL guard) for DURATION (10m), in
# the test profile (the one the suite builds: no second build of DataFusion), in
# chunks of CHUNK cases (each chunk with fresh random seeds), and prints the cases run per
# target as a Markdown table for BENCHMARKS.md. A failing case stops the script and is kept
# by proptest under the crate's `proptest-regressions/`, to commit as a regression test.
#
#   bash benches/fuzz.sh
#   DURATION=2m bash benches/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10m}
CHUNK=${CHUNK:-20000}
case $DURATION in
  *m) SECONDS_EACH=$((${DURATION%m} * 60)) ;;
  *s) SECONDS_EACH=${DURATION%s} ;;
  *) SECONDS_EACH=$DURATION ;;
esac
TARGETS="
callwatch-collector fuzz::protobuf_bodies_convert_or_are_refused
callwatch-collector fuzz::raw_protobuf_bytes_are_refused_or_converted
callwatch-collector fuzz::json_bodies_decode_or_are_refused
callwatch-collector fuzz::raw_json_text_is_refused_or_decoded
callwatch-collector fuzz::gzip_bodies_inflate_within_their_limit_or_are_refused
callwatch-ui fuzz::traceql_parses_or_is_refused
callwatch-ui fuzz::times_parse_or_are_refused
callwatch-ui fuzz::durations_parse_or_are_refused
callwatch-ui fuzz::trace_ids_are_normalized_or_refused
callwatch-query guard::fuzz::any_text_gets_a_verdict
callwatch-query guard::fuzz::statements_that_write_are_refused
"
# The test binaries are copied aside and run directly, so that editing or building the
# workspace while the script runs changes nothing under it.
BINS=$(mktemp -d)
cargo test --locked --quiet --no-run --message-format=json \
    -p callwatch-collector -p callwatch-ui -p callwatch-query --lib 2>/dev/null |
  python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["package_id"].split("#")[-1].split("@")[0].split("/")[-1])
' "$BINS"
echo "| target | cases | seconds |"
echo "|---|---|---|"
echo "$TARGETS" | while read -r crate target; do
  [ -z "$crate" ] && continue
  began=$(date +%s)
  cases=0
  while [ $(($(date +%s) - began)) -lt "$SECONDS_EACH" ]; do
    if ! PROPTEST_CASES=$CHUNK "$BINS/$crate" "$target" --exact --quiet >/tmp/fuzz-chunk.log 2>&1; then
      cat /tmp/fuzz-chunk.log
      echo "FAILED: $crate $target (the failing case is in $crate's proptest-regressions/)"
      exit 1
    fi
    cases=$((cases + CHUNK))
  done
  echo "| \`$target\` | $cases | $(($(date +%s) - began)) |"
done
