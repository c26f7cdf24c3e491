#!/usr/bin/env bash
# Fuzz smoke test (issue #10, part 4): builds the cargo-fuzz targets in fuzz/ and runs
# each for a bounded time from its committed seed corpus (fuzz/seeds/TARGET), failing
# on any crash, panic, broken property, timeout or out-of-memory. Prints each target's
# executions, executions per second and corpus size.
#
#   scripts/fuzz-smoke.sh                 # every target, FLEET_FUZZ_SECONDS each (45)
#   scripts/fuzz-smoke.sh json_reading    # one target
#   FLEET_FUZZ_SECONDS=300 scripts/fuzz-smoke.sh   # a longer look
#
# Installs cargo-fuzz (from crates.io, pinned) into ~/.cache/fleet/tools if missing.
# Builds into ~/.cache/fleet/fuzz-target (FLEET_FUZZ_TARGET_DIR), away from the
# workspace's target/ (instrumented builds would invalidate it) and shared by every
# checkout, so CI's fresh clones build only what changed. The corpus a run grows is kept
# in fuzz/corpus/TARGET (not committed); a crash is written to fuzz/artifacts/TARGET/.
# docs/fuzzing-and-supply-chain.md has the targets, their properties and the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'fuzz: %s\n' "$*" >&2; }

readonly CARGO_FUZZ_VERSION=0.13.2
readonly TARGETS=(protobuf_reading json_reading registry_toml)
seconds=${FLEET_FUZZ_SECONDS:-45}
tools=${FLEET_TOOLS_HOME:-$HOME/.cache/fleet/tools}
export PATH="$tools/bin:$PATH"
export CARGO_TARGET_DIR=${FLEET_FUZZ_TARGET_DIR:-$HOME/.cache/fleet/fuzz-target}

# cargo-fuzz compiles with rustc flags only a nightly compiler accepts (-Zsanitizer=address
# and LLVM's coverage passes). This machine, its developers' and CI have stable Rust
# only, and no other toolchain can be fetched; RUSTC_BOOTSTRAP=1 tells stable rustc to
# accept them (the sanitizer runtimes ship with the stable x86_64 Linux toolchain).
# Fuzzing builds only: nothing else in the repository sets it.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools (crates.io; about a minute, once)"
  cargo install --locked --quiet --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

targets=("$@")
((${#targets[@]})) || targets=("${TARGETS[@]}")

# Cargo caches rustc's answers (target-info probes) in the target directory without
# keying them on RUSTC_BOOTSTRAP: one build tried there without it leaves a cached
# "-Z is only accepted on nightly" that every later build repeats. The cache is cheap
# to rebuild, so it goes.
rm -f "$CARGO_TARGET_DIR/.rustc_info.json"
# Cargo never collects garbage: each checkout path (CI's clones) leaves its own
# instrumented fleet-core and target binaries behind. Past 3 GiB the directory goes,
# and the next build starts afresh (about 5 minutes).
if [ -d "$CARGO_TARGET_DIR" ] && (($(du -sm "$CARGO_TARGET_DIR" | cut -f1) > 3072)); then
  say "$CARGO_TARGET_DIR is over 3 GiB: removing it (a fresh build follows)"
  rm -rf "$CARGO_TARGET_DIR"
fi

say "building ${#targets[@]} target(s) (instrumented, AddressSanitizer; into $CARGO_TARGET_DIR)"
build_start=$SECONDS
for target in "${targets[@]}"; do
  cargo fuzz build --fuzz-dir fuzz "$target" 2>&1 |
    { grep -vE '^\s+(Compiling|Checking|Downloaded|Downloading)' || true; } >&2
done
say "built in $((SECONDS - build_start)) s"

failed=()
summary=()
for target in "${targets[@]}"; do
  seeds=fuzz/seeds/$target
  corpus=fuzz/corpus/$target
  artifacts=fuzz/artifacts/$target
  [ -d "$seeds" ] || { say "no seed corpus at $seeds"; exit 1; }
  mkdir -p "$corpus" "$artifacts"
  log=$(mktemp -t "fuzz-$target.XXXXXX")
  say "running $target for $seconds s from $seeds ($(find "$seeds" -type f | wc -l) seeds)"
  status=0
  # -timeout: one input taking over 10 s is a hang, and a failure; -rss_limit_mb: a
  # parser that balloons past 2 GiB on a small input fails too.
  cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)
  line="$target: ${execs:-?} execs, ${rate:-?} execs/s, corpus ${corp:-?} (entries/bytes)"
  # A run that exits 0 having executed nothing (an empty build, a harness that
  # returned at once) has tested nothing: a failure, not an "ok".
  if ((status == 0)) && [ "${execs:-0}" -eq 0 ] 2>/dev/null; then
    status=1
    say "$target executed no input"
  fi
  if ((status != 0)); then
    failed+=("$target")
    summary+=("$line  FAILED")
    say "$target FAILED (exit $status); the end of its log ($log):"
    grep -vE '^#[0-9]+' "$log" | tail -40 >&2
    for crash in "$artifacts"/*; do
      [ -e "$crash" ] || continue
      say "  input kept: $crash"
      say "  reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $target $crash"
      say "  minimise:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz $target $crash"
    done
  else
    summary+=("$line  ok")
    rm -f "$log"
  fi
done

say "summary ($seconds s per target):"
for line in "${summary[@]}"; do say "  $line"; done
if ((${#failed[@]})); then
  say "FAILED: ${failed[*]} (turn each crash into a regression test under services/core/tests/)"
  exit 1
fi
say "no crash in ${#targets[@]} target(s)"
