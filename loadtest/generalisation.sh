#!/usr/bin/env bash
# Detection quality on fleets the detector was not written against: simulated fleets
# (40 pumps x 120 days) varied one knob at a time away from the default fleet:
# interrogation cadence (15-120 min), sensor noise (x2, x3), programmed rates (low,
# high), pump models (sensor pumps only, valve pumps only, 20 mL only, 40 mL only) and
# fault size (small, large), with the realistic fault mix; then fleets where every pump
# carries one fault, to put the fault size and the noise where they matter (in the
# realistic mix a fleet holds one or two of each). Several seeds each, scored with the
# shared scoring tool next to a baseline that only relays the pump's own alarms (device
# alarm events, ERI/EOS flags, motor stalls).
# Usage: loadtest/generalisation.sh [SCORER]   (default ../shared/tools/score_alarms.py)
# Env: GENERALISATION_SEEDS (default "11 12 13 14 15").
# Prints two Markdown tables: one row per fleet, then one per variant (seeds summed).
set -euo pipefail
cd "$(dirname "$0")/.."
scorer=${1:-../shared/tools/score_alarms.py}
[ -f "$scorer" ] || { echo "generalisation: scorer $scorer not found" >&2; exit 2; }
seeds=${GENERALISATION_SEEDS:-11 12 13 14 15}
# One command, both targets named: `-p fleet-detector -p fleet-simulator --example dump`
# would build only the example and leave a stale (or missing) detector binary.
cargo build --release --quiet -p fleet-detector -p fleet-simulator --bin fleet-detector --example dump
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# variant name | dump environment (cadence 60 min unless it says otherwise) | the
# fault every pump carries (empty: the realistic mix)
variants=(
  "cadence 15 min|DUMP_CADENCE_MIN=15|"
  "cadence 30 min|DUMP_CADENCE_MIN=30|"
  "cadence 60 min (default fleet)||"
  "cadence 120 min|DUMP_CADENCE_MIN=120|"
  "noise x2|DUMP_NOISE=2|"
  "noise x3|DUMP_NOISE=3|"
  "noise x3, cadence 120 min|DUMP_NOISE=3 DUMP_CADENCE_MIN=120|"
  "rates low (0.1-0.4 mL/day)|DUMP_RATE_RANGE=0.1,0.4|"
  "rates high (0.8-2.5 mL/day)|DUMP_RATE_RANGE=0.8,2.5|"
  "models ITP only (sensors)|DUMP_MODELS=ITP-20,ITP-40|"
  "models ITV only (no sensors)|DUMP_MODELS=ITV-20,ITV-40|"
  "models 20 mL only|DUMP_MODELS=ITP-20,ITV-20|"
  "models 40 mL only|DUMP_MODELS=ITP-40,ITV-40|"
  "faults small (x0.5)|DUMP_FAULT_SCALE=0.5|"
  "faults large (x2)|DUMP_FAULT_SCALE=2|"
  "all occlusion, size x0.5|DUMP_FAULT_SCALE=0.5|occlusion"
  "all occlusion, size x1||occlusion"
  "all occlusion, size x2|DUMP_FAULT_SCALE=2|occlusion"
  "all battery_premature, size x0.5|DUMP_FAULT_SCALE=0.5|battery_premature"
  "all battery_premature, size x1||battery_premature"
  "all battery_premature, size x2|DUMP_FAULT_SCALE=2|battery_premature"
  "all motor_stall, size x0.5|DUMP_FAULT_SCALE=0.5|motor_stall"
  "all motor_stall, size x1||motor_stall"
  "all motor_stall, size x2|DUMP_FAULT_SCALE=2|motor_stall"
  "all reprogram_up, size x0.5|DUMP_FAULT_SCALE=0.5|reprogram_up"
  "all reprogram_up, size x2|DUMP_FAULT_SCALE=2|reprogram_up"
  "all bolus_spikes (benign), noise x3|DUMP_NOISE=3|bolus_spikes"
  "all bolus_spikes (benign), noise x3, cadence 120 min|DUMP_NOISE=3 DUMP_CADENCE_MIN=120|bolus_spikes"
)

# The scorer's JSON -> "recall precision repeats tp fn fp late missed false": missed
# lists the kinds of missed episodes (late ones included), false the kinds of false or
# late alarms, as kind:count,kind:count or "-".
cat >"$work/summary.py" <<'PY'
import json, sys
r = json.load(sys.stdin)
t = r["total"]
def kinds(fields):
    out = [f"{k['kind']}:{sum(k[f] for f in fields)}" for k in r["kinds"] if sum(k[f] for f in fields)]
    return ",".join(out) or "-"
print(t["recall"], t["precision"], t["repeats"], t["tp"], t["fn"], t["fp"], t["late"],
      kinds(["fn"]), kinds(["fp", "late"]))
PY
score() { # ALARMS TRUTH
  python3 "$scorer" "$1" "$2" --json | python3 "$work/summary.py"
}

rows=$work/rows.tsv
: >"$rows"
echo "| variant | seed | episodes | detector recall | precision | repeats | missed | false or late | baseline recall | precision |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for v in "${variants[@]}"; do
  IFS='|' read -r name settings fault <<<"$v"
  for seed in $seeds; do
    # shellcheck disable=SC2086 # settings is a list of NAME=VALUE words, fault one word or none
    env DUMP_CADENCE_MIN=60 $settings "$bin/examples/dump" "$seed" 40 120 "$work/truth.json" $fault >"$work/readings.jsonl"
    "$bin/fleet-detector" replay --input "$work/readings.jsonl" --output "$work/detector.jsonl" 2>/dev/null
    "$bin/fleet-detector" replay --baseline --input "$work/readings.jsonl" --output "$work/baseline.jsonl" 2>/dev/null
    read -r dr dp drep dtp dfn dfp dlate dmiss dfalse < <(score "$work/detector.jsonl" "$work/truth.json")
    read -r br bp _ btp bfn bfp blate _ _ < <(score "$work/baseline.jsonl" "$work/truth.json")
    echo "| $name | $seed | $((dtp + dfn)) | $dr | $dp | $drep | ${dmiss//,/, } | ${dfalse//,/, } | $br | $bp |"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$dtp" "$dfn" "$dfp" "$dlate" "$drep" \
      "$btp" "$bfn" "$bfp" "$blate" >>"$rows"
  done
done

echo
echo "| variant | fleets | episodes | detector recall | precision | tp / fn / fp / late / repeats | baseline recall | precision |"
echo "|---|---|---|---|---|---|---|---|"
python3 - "$rows" <<'PY'
import sys
order, sums = [], {}
for line in open(sys.argv[1]):
    name, *n = line.rstrip("\n").split("\t")
    if name not in sums:
        order.append(name)
        sums[name] = [0] * (len(n) + 1)
    s = sums[name]
    s[0] += 1
    for i, v in enumerate(n, 1):
        s[i] += int(v)
def ratio(a, b):
    return f"{a / b:.3f}" if b else "-"
for name in order:
    fleets, dtp, dfn, dfp, dlate, drep, btp, bfn, bfp, blate = sums[name]
    # As the scoring tool computes them: a late alarm makes its episode a miss and is
    # not counted against precision.
    print(f"| {name} | {fleets} | {dtp + dfn} | {ratio(dtp, dtp + dfn)} | {ratio(dtp, dtp + dfp)} "
          f"| {dtp} / {dfn} / {dfp} / {dlate} / {drep} | {ratio(btp, btp + bfn)} | {ratio(btp, btp + bfp)} |")
PY
