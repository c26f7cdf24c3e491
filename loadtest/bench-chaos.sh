#!/usr/bin/env bash
# The chaos test at length: `fleet-chaos` kills every component of the pipeline with
# SIGKILL, one at a time in an order drawn from the seed, for several minutes while a
# simulated fleet plays its history, then checks that nothing was lost, archived twice
# or paged twice (docs/chaos.md). Runs on a fresh private stack of its own
# (.state/bench-chaos, ports 27830/27092/27432), purged on exit; the summary goes to
# loadtest/results/chaos.json, the printed report to .state/chaos/bench.txt, and the run's
# logs stay in .state/chaos/bench.
# Usage: loadtest/bench-chaos.sh [fleet-chaos options]
#   (default: --duration 5m --pumps 60 --interval 8s --seed 1)
#   CHAOS_PROFILE=debug uses debug binaries instead of release ones.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${CHAOS_PROFILE:-release}
flags=()
[ "$profile" = release ] && flags=(--release)
cargo build "${flags[@]}" --quiet -p fleetctl -p fleet-ingest -p fleet-detector -p fleet-notifier \
  -p fleet-api -p fleet-gateway -p fleet-archiver --bins
cargo build "${flags[@]}" --quiet -p fleet-loadtest --bin fleet-chaos
bin=${CARGO_TARGET_DIR:-target}/$profile
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--duration 5m --pumps 60 --interval 8s --seed 1)
out=loadtest/results/chaos.json
state=.state/chaos/bench
rm -rf "$state"
source loadtest/private-stack.sh chaos 27830 27092 27432
# The printed report beside the state directory, not in it: fleet-chaos refuses a
# state directory that is not empty.
mkdir -p "$(dirname "$state")"
"$bin/fleet-chaos" "${args[@]}" --state-dir "$state" --out "$out" 2>&1 | tee "$state.txt"
