#!/usr/bin/env bash
# Archiver throughput against a raw COPY of the same rows into the same database in the
# same run (`fleet-archive-bench`, release build), on a private local stack started
# empty for the run and stopped afterwards. Writes loadtest/results/archiver.json.
# Usage: loadtest/bench-archiver.sh [fleet-archive-bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p fleet-loadtest --bin fleet-archive-bench -p fleet-archiver
export FLEET_STATE_DIR=$PWD/.state/bench-archiver
export FLEET_STACK_MQTT_PORT=${FLEET_STACK_MQTT_PORT:-48831}
export FLEET_STACK_KAFKA_PORT=${FLEET_STACK_KAFKA_PORT:-49093}
export FLEET_STACK_PG_PORT=${FLEET_STACK_PG_PORT:-45433}
deploy/local/stack.sh down --purge >&2 || true
trap 'deploy/local/stack.sh down --purge >&2 || true' EXIT
deploy/local/stack.sh up >&2
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL
"${CARGO_TARGET_DIR:-target}/release/fleet-archive-bench" "$@"
