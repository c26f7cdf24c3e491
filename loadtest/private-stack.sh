# Sourced by the benchmark scripts: a private local stack for one benchmark, in
# .state/bench-NAME on its own ports, started empty (the local broker slows as its
# store grows, so a reused stack would measure its own history) and purged on exit.
# Usage: source loadtest/private-stack.sh NAME MQTT_PORT KAFKA_PORT PG_PORT
# Ports below 32768: Linux hands out the ports above as the local end of outgoing
# connections, and a load test holding 10,000 of them once took a stack's port.
export FLEET_STATE_DIR=$PWD/.state/bench-$1
export FLEET_STACK_MQTT_PORT=${FLEET_STACK_MQTT_PORT:-$2}
export FLEET_STACK_KAFKA_PORT=${FLEET_STACK_KAFKA_PORT:-$3}
export FLEET_STACK_PG_PORT=${FLEET_STACK_PG_PORT:-$4}
deploy/local/stack.sh down --purge >&2 || true
trap 'deploy/local/stack.sh down --purge >&2 || true' EXIT
deploy/local/stack.sh up >&2
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL
