#!/usr/bin/env bash
# Alarm latency, gateway to clinic receiver, while the telemetry path carries a fleet's
# load: runs `fleet-latency` (release build) on a private stack started empty and
# purged afterwards. Writes loadtest/results/alarm-latency.json and prints it.
# Usage: loadtest/bench-latency.sh [fleet-latency flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
# Every binary the run starts is named: `--bin` filters every package given with `-p`.
cargo build --release --quiet --bin fleet-latency --bin fleet-ingest --bin fleet-detector \
  --bin fleet-notifier --bin fleet-gateway --bin fleetctl
source loadtest/private-stack.sh latency 23830 23092 23432
"${CARGO_TARGET_DIR:-target}/release/fleet-latency" "$@"
