#!/usr/bin/env bash
# Detection quality on fleets the detector was not written against: simulated fleets
# (realistic fault mix) at cadences from 15 to 120 minutes and several seeds, scored
# with the shared scoring tool, next to a baseline that only relays the pump's own
# alarms (device alarm events, ERI/EOS flags, motor stalls).
# Usage: loadtest/generalisation.sh [SCORER]   (default ../shared/tools/score_alarms.py)
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
scorer=${1:-../shared/tools/score_alarms.py}
[ -f "$scorer" ] || { echo "generalisation: scorer $scorer not found" >&2; exit 2; }
cargo build --release --quiet -p fleet-detector -p fleet-simulator --example dump
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

score() { # ALARMS TRUTH -> "recall precision repeats tp fn fp"
  python3 "$scorer" "$1" "$2" --json | python3 -c '
import json, sys
t = json.load(sys.stdin)["total"]
print(t["recall"], t["precision"], t["repeats"], t["tp"], t["fn"], t["fp"])'
}

echo "| cadence | seed | pumps × days | episodes | detector recall | precision | repeats | baseline recall | precision |"
echo "|---|---|---|---|---|---|---|---|---|"
for cadence in 15 30 60 120; do
  for seed in 11 12 13; do
    DUMP_CADENCE_MIN=$cadence "$bin/examples/dump" "$seed" 40 120 "$work/truth.json" >"$work/readings.jsonl"
    "$bin/fleet-detector" replay --input "$work/readings.jsonl" --output "$work/detector.jsonl" 2>/dev/null
    "$bin/fleet-detector" replay --baseline --input "$work/readings.jsonl" --output "$work/baseline.jsonl" 2>/dev/null
    read -r dr dp drep dtp dfn _ < <(score "$work/detector.jsonl" "$work/truth.json")
    read -r br bp _ _ _ _ < <(score "$work/baseline.jsonl" "$work/truth.json")
    echo "| ${cadence} min | $seed | 40 × 120 | $((dtp + dfn)) | $dr | $dp | $drep | $br | $bp |"
  done
done
