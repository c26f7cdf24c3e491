#!/usr/bin/env bash
# Archiver throughput against a raw COPY of the same rows into the same database in the
# same run (`fleet-archive-bench`, release build), on a private stack started empty and
# purged afterwards. Writes loadtest/results/archiver.json.
# Usage: loadtest/bench-archiver.sh [fleet-archive-bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin fleet-archive-bench --bin fleet-archiver
source loadtest/private-stack.sh archiver 24830 24092 24432
"${CARGO_TARGET_DIR:-target}/release/fleet-archive-bench" "$@"
