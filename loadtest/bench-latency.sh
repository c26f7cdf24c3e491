#!/usr/bin/env bash
# Alarm latency, gateway to clinic receiver, while the telemetry path carries a fleet's
# load: runs `fleet-latency` (release build) against a private local stack, started
# empty for the run and stopped afterwards (the local broker slows as its store grows,
# so a reused stack would measure its history). Writes
# loadtest/results/alarm-latency.json and prints it.
# Usage: loadtest/bench-latency.sh [fleet-latency flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p fleet-loadtest --bin fleet-latency \
  -p fleet-ingest -p fleet-detector -p fleet-notifier -p fleet-gateway -p fleetctl
export FLEET_STATE_DIR=$PWD/.state/bench-latency
export FLEET_STACK_MQTT_PORT=${FLEET_STACK_MQTT_PORT:-48830}
export FLEET_STACK_KAFKA_PORT=${FLEET_STACK_KAFKA_PORT:-49092}
export FLEET_STACK_PG_PORT=${FLEET_STACK_PG_PORT:-45432}
deploy/local/stack.sh down --purge >&2 || true
trap 'deploy/local/stack.sh down --purge >&2 || true' EXIT
deploy/local/stack.sh up >&2
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL
"${CARGO_TARGET_DIR:-target}/release/fleet-latency" "$@"
