#!/usr/bin/env bash
# The main job: a simulated fleet of 200 pumps under three clinics plays its last 60
# days through the whole pipeline, faster than real time and with a realistic mix of
# faults, on a fresh local stack (real Mosquitto, Kafka-protocol broker and PostgreSQL
# on loopback, state in .state/demo). `fleet-demo` starts every service and each
# clinic's reference receiver, shows progress, prints a summary held to the
# simulator's ground truth and the dashboard's login, then keeps the fleet running
# live until Ctrl-C. Flags go to fleet-demo (`scripts/demo.sh --exit` stops after the
# summary; `--help` lists the rest). The stack stops when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\ndemo: %s\n' "$*" >&2; }

export FLEET_STATE_DIR=${FLEET_DEMO_STATE_DIR:-$PWD/.state/demo}

say "building the services (release: the gateways of 200 pumps at 14,400x need it)"
# Each binary by name: `-p X ... --bin fleet-demo` would build only fleet-demo (the
# --bin filter applies to every package) and leave stale or missing service binaries.
cargo build --release --quiet --bin fleetctl --bin fleet-ingest --bin fleet-detector \
  --bin fleet-notifier --bin fleet-api --bin fleet-gateway --bin fleet-archiver --bin fleet-demo
bin=${CARGO_TARGET_DIR:-target}/release

say "starting a fresh demo stack (state in $FLEET_STATE_DIR)"
deploy/local/stack.sh down --purge >/dev/null 2>&1 || true
# The stack's MQTT is TLS only; its CA and certificates are made with this fleetctl
# (docs/security.md), and the demo issues each gateway's under that CA.
FLEET_FLEETCTL=$bin/fleetctl deploy/local/stack.sh up
trap 'say "stopping the demo stack"; deploy/local/stack.sh down >/dev/null 2>&1 || true' EXIT
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL

say "checking every component with the project's own clients"
"$bin/fleetctl" stack status

"$bin/fleet-demo" --state-dir "$FLEET_STATE_DIR/run" "$@"
