#!/usr/bin/env bash
# Throughput of `fleetctl readings validate` (JSON parse + validation) on one core.
#
# Input: the repository's smoke scenario repeated to ~230,000 readings, uncompressed,
# so the figure is the parser's and not gzip's. Pinned to one core with taskset.
# Usage: loadtest/bench-validate.sh [REPEATS]   (prints one line per run and the best)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-5}
copies=10

cargo build --release -p fleetctl --quiet
bin=${CARGO_TARGET_DIR:-target}/release/fleetctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$copies"); do
  zcat services/core/tests/data/smoke.readings.jsonl.gz
done >"$work/readings.jsonl"
lines=$(wc -l <"$work/readings.jsonl")
bytes=$(stat -c %s "$work/readings.jsonl")

pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
best=0
for run in $(seq "$repeats"); do
  start=$(date +%s.%N)
  "${pin[@]}" "$bin" readings validate "$work/readings.jsonl" >/dev/null
  end=$(date +%s.%N)
  rate=$(awk -v n="$lines" -v s="$start" -v e="$end" 'BEGIN { printf "%d", n / (e - s) }')
  echo "run $run: $lines readings in $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }') s = $rate readings/s"
  [ "$rate" -gt "$best" ] && best=$rate
done
echo "best: $best readings/s on one core ($lines readings, $((bytes / lines)) bytes each on average)"
