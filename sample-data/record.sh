#!/usr/bin/env bash
# Records the sample scenarios into DIR (default: this folder). The tests run this script
# into a temporary folder and compare every byte with the files committed here.
#
#   bash sample-data/record.sh            # after `cargo build`
#   CALLWATCH=target/release/callwatch bash sample-data/record.sh /tmp/out
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
callwatch=${CALLWATCH:-$here/../target/debug/callwatch}
record() {
  local name=$1
  shift
  "$callwatch" demo --record "$out/$name.jsonl" "$@" >/dev/null
}
record steady --scenario steady --duration 20s --rate 3 --seed 1
record payment-outage --scenario payment-outage --duration 150s --rate 1 --seed 2
record full --scenario full --duration 160s --rate 1.5 --seed 3
