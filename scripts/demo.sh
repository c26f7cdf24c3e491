#!/usr/bin/env bash
# The main job, as far as the pipeline is built today: bring the local stack up (real
# Mosquitto, Kafka-protocol broker and PostgreSQL on loopback), prove each answers with
# the project's own clients, and validate the labelled scenario readings.
# The stack keeps running afterwards; `deploy/local/stack.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\ndemo: %s\n' "$*" >&2; }

say "starting the local stack"
deploy/local/stack.sh up
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL

say "building fleetctl (release)"
cargo build --release --quiet -p fleetctl
fleetctl=${CARGO_TARGET_DIR:-target}/release/fleetctl

say "checking every component with the project's own clients"
"$fleetctl" stack status

# The repository carries the small scenario; the shared ones are used when present.
scenarios=(services/core/tests/data/*.readings.jsonl.gz)
for extra in ../shared/scenarios/*.readings.jsonl.gz; do
  [ -e "$extra" ] && scenarios+=("$extra")
done
for file in "${scenarios[@]}"; do
  say "validating $file"
  "$fleetctl" readings validate "$file"
done

say "done. The stack is still running; to use it from a shell:"
echo "  eval \"\$(deploy/local/stack.sh env)\""
echo "  deploy/local/stack.sh down    # stop it"
