#!/usr/bin/env bash
# How the whole pipeline's cost grows with the fleet: `fleet-demo --exit` (release) over
# the same 30 simulated days at the same speedup for fleets of 50, 200 and 800 pumps
# (so the offered load grows with the fleet: about 200, 800 and 3,200 readings/s),
# each on a fresh private stack. Every run must lose nothing; the figures (CPU-seconds
# per process, alarm latency, recall and precision) go to
# loadtest/results/fleet-sizes.json and are printed as a table.
# Usage: loadtest/bench-fleet-sizes.sh [PUMPS...]   (default: 50 200 800)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50 200 800)
cargo build --release --quiet -p fleetctl -p fleet-ingest -p fleet-detector -p fleet-notifier \
  -p fleet-api -p fleet-gateway -p fleet-archiver -p fleet-loadtest --bin fleet-demo
bin=${CARGO_TARGET_DIR:-target}/release
out=loadtest/results/fleet-sizes.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for pumps in "${sizes[@]}"; do
  (
    source loadtest/private-stack.sh fleet-sizes 26830 26092 26432
    # A fleet the pipeline cannot keep up with ends non-zero (readings not archived in
    # time); its summary is still written and still goes into the table.
    "$bin/fleet-demo" --exit --free-ports --pumps "$pumps" --history 30d --speedup 14400 \
      --seed 5 --state-dir "$work/$pumps" >"$work/$pumps.txt" ||
      echo "fleet of $pumps pumps: fleet-demo exited non-zero (see the table)" >&2
  )
  echo "fleet of $pumps pumps: done" >&2
done
python3 - "$work" "$out" "${sizes[@]}" <<'PY'
import json, sys, datetime
work, out, sizes = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = []
for pumps in sizes:
    s = json.load(open(f"{work}/{pumps}/summary.json"))
    r = s["readings"]
    cpu = sum(s["cpu_seconds"].values())
    runs.append({
        "pumps": int(pumps), "readings": r["produced"], "lost": r["lost"], "missing": r["missing"],
        "wall_s": round(s["wall_seconds"]), "cpu_s": round(cpu, 1),
        "cpu_ms_per_reading": round(cpu * 1000 / r["produced"], 3),
        "cpu_s_by_process": {k: round(v, 1) for k, v in s["cpu_seconds"].items()},
        "latency_ms": s["latency_ms"], "recall": s["alarms_total"]["recall"],
        "precision": s["alarms_total"]["precision"], "episodes": s["alarms_total"]["episodes"],
    })
result = {"measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": "loadtest/bench-fleet-sizes.sh " + " ".join(sizes), "runs": runs}
json.dump(result, open(out, "w"), indent=1)
procs = sorted({p for r in runs for p in r["cpu_s_by_process"]})
print("| pumps | readings | not archived in time | lost | CPU ms/reading | " + " | ".join(procs) + " | latency p50 / p99 ms | recall | precision |")
print("|---" * (9 + len(procs)) + "|")
for r in runs:
    per = [f'{r["cpu_s_by_process"].get(p, 0) * 1000 / r["readings"]:.3f}' for p in procs]
    lat = r["latency_ms"]
    print(f'| {r["pumps"]} | {r["readings"]:,} | {r["missing"]:,} | {r["lost"]} | {r["cpu_ms_per_reading"]} | ' + " | ".join(per) +
          f' | {lat["p50"]} / {lat["p99"]} | {r["recall"]} | {r["precision"]} |')
PY
