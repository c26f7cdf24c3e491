#!/usr/bin/env bash
# Throughput of `fleet-detector replay` (JSON parse, validation, every rule) on one core,
# and instructions per reading from callgrind (stable on a noisy machine).
#
# Input: a simulated fleet (fleet-simulator, seed 7, realistic fault mix) of 100 pumps
# over 30 days at a 15-minute cadence, about 288,000 readings, uncompressed. A repeated
# file would not do: the detector ignores a pump's repeated sequence numbers cheaply.
# Usage: loadtest/bench-detector.sh [REPEATS]   (one line per run, the best, callgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-5}

# The binary is named too: `--example` alone would build the example and no binary.
cargo build --release --quiet -p fleet-detector -p fleet-simulator --bin fleet-detector --example dump
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
DUMP_CADENCE_MIN=15 "$bin/examples/dump" 7 100 30 "$work/truth.json" >"$work/readings.jsonl"
lines=$(wc -l <"$work/readings.jsonl")

pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
best=0
for run in $(seq "$repeats"); do
  start=$(date +%s.%N)
  "${pin[@]}" "$bin/fleet-detector" replay --input "$work/readings.jsonl" --output /dev/null 2>/dev/null
  end=$(date +%s.%N)
  rate=$(awk -v n="$lines" -v s="$start" -v e="$end" 'BEGIN { printf "%d", n / (e - s) }')
  echo "run $run: $lines readings in $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }') s = $rate readings/s"
  [ "$rate" -gt "$best" ] && best=$rate
done
echo "best: $best readings/s on one core ($lines readings)"

if command -v valgrind >/dev/null; then
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$bin/fleet-detector" replay --input "$work/readings.jsonl" --output /dev/null 2>"$work/valgrind.log" >/dev/null
  instructions=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/valgrind.log")
  echo "callgrind: $instructions instructions, $((instructions / lines)) per reading (whole process)"
else
  echo "callgrind: valgrind not installed (apt-get install valgrind)"
fi
