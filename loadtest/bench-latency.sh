#!/usr/bin/env bash
# Alarm latency, gateway to clinic receiver, while the telemetry path carries a fleet's
# load: runs `fleet-latency` (release build) against the local stack, which it starts if
# needed. Writes loadtest/results/alarm-latency.json and prints it.
# Usage: loadtest/bench-latency.sh [fleet-latency flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p fleet-loadtest --bin fleet-latency \
  -p fleet-ingest -p fleet-detector -p fleet-notifier -p fleet-gateway -p fleetctl
deploy/local/stack.sh up >&2
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL
"${CARGO_TARGET_DIR:-target}/release/fleet-latency" "$@"
