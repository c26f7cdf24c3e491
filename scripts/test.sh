#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts a
# private copy of the local stack (its own ports and state, so a running demo is left
# alone), runs every tier, and stops the stack again whatever happens.
#
#   tiers: formatting and lints; unit and property tests; component tests (rdkafka's
#   mock cluster); real-stack tests (the #[ignore]d ones, which need the stack).
#
# A component that cannot start fails the run: nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test: %s\n' "$*" >&2; }

# --- toolchain prerequisites: a C compiler and make for librdkafka's bundled build.
missing=()
for tool in cc make perl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  say "installing build tools (missing: ${missing[*]})"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq build-essential perl
fi

# --- the dashboard's browser test drives Debian's Chromium through ChromeDriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  say "installing chromium and chromium-driver (the dashboard's browser test)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium chromium-driver
fi

# --- deployment artefacts (helm/fleet, deploy/grafana, deploy/prometheus, deploy/strimzi,
# Dockerfile): checked against the code and each other in seconds, before the slow tiers.
# Python only (its own virtual environment under ~/.cache/fleet); see docs/operations.md.
say "checking the deployment artefacts (scripts/check-deploy.sh)"
scripts/check-deploy.sh

# --- fuzzing and the supply chain (issue #10, parts 4 and 5; docs/fuzzing-and-supply-chain.md).
# Each fuzz target runs FLEET_FUZZ_SECONDS (45) from its committed seeds and any crash
# fails the run; then cargo-deny's licence, duplicate, source and advisory checks, and a
# CycloneDX SBOM per service into target/sbom/. About 3 minutes warm. A fresh machine
# first installs cargo-fuzz, cargo-deny and cargo-cyclonedx into ~/.cache/fleet/tools
# (about 10 minutes on 2 cores) and builds the fuzz targets (about 5 more), once.
# Advisories cannot be checked where GitHub is unreachable: the run says so loudly and
# stays green (FLEET_REQUIRE_ADVISORIES=1 makes that a failure).
say "fuzzing the parsers of outside input (scripts/fuzz-smoke.sh)"
scripts/fuzz-smoke.sh
say "checking the supply chain (scripts/supply-chain.sh)"
scripts/supply-chain.sh

# --- lint tier: cheap, and a red lint is a red CI.
say "checking formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

# --- the test stack: separate ports and state from the demo's stack.
export FLEET_STATE_DIR=${FLEET_TEST_STATE_DIR:-$PWD/.state/test-stack}
export FLEET_STACK_MQTT_PORT=${FLEET_TEST_MQTT_PORT:-28830}
export FLEET_STACK_KAFKA_PORT=${FLEET_TEST_KAFKA_PORT:-29092}
export FLEET_STACK_PG_PORT=${FLEET_TEST_PG_PORT:-25432}
stop_stack() {
  say "stopping the test stack"
  deploy/local/stack.sh down >&2 || say "stack down reported a problem (see $FLEET_STATE_DIR/logs)"
}
trap stop_stack EXIT
say "starting the test stack (state in $FLEET_STATE_DIR)"
deploy/local/stack.sh up >&2
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL

# --- every test, including the ones that need the stack.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --run-ignored all --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --doc --quiet
else
  say "cargo-nextest not found; using cargo test"
  cargo test --workspace --no-fail-fast -- --include-ignored
fi
say "all tiers passed"
