#!/usr/bin/env bash
# The home gateway's footprint: binary size (as built, and stripped) and resident
# memory once idle (one simulated pump, caught up with real time, connected to the
# broker, waiting for its next hourly interrogation). Needs the local stack.
# Usage: loadtest/bench-gateway-footprint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(deploy/local/stack.sh env)"
cargo build --release --quiet -p fleet-gateway -p fleetctl
bin=${CARGO_TARGET_DIR:-target}/release/fleet-gateway
# MQTT is TLS with a certificate per gateway: issue this one's under the stack's CA.
if [[ ${FLEET_MQTT_URL:-} == mqtts://* ]]; then
  "${CARGO_TARGET_DIR:-target}/release/fleetctl" certs --out "$FLEET_STACK_CERTS" --gateway gw-footprint
fi
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cp "$bin" "$work/fleet-gateway.stripped"
strip "$work/fleet-gateway.stripped"

# One day of history at 3600x catches up in ~24 s; then the gateway is idle.
"$bin" --gateway-id gw-footprint --state-dir "$work/state" --history 1d --speedup 3600 \
  --metrics-addr 127.0.0.1:0 >"$work/log" 2>&1 &
pid=$!
sleep 40
rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
hwm_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
threads=$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")
echo "binary: $(( $(stat -c %s "$bin") / 1024 )) KiB as built, $(( $(stat -c %s "$work/fleet-gateway.stripped") / 1024 )) KiB stripped"
echo "idle RSS: $rss_kb KiB (peak $hwm_kb KiB), $threads threads"
