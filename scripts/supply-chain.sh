#!/usr/bin/env bash
# Supply-chain checks (issue #10, part 5), against the policy in deny.toml:
#
#   1. licences, duplicate crates and crate sources (`cargo deny check licenses bans
#      sources`): need no network beyond crates.io, and a finding fails the run;
#   2. known vulnerabilities, unmaintained and yanked crates (`cargo deny check
#      advisories`) against the RustSec advisory database, which cargo-deny fetches
#      from GitHub. Where that fetch fails (this project's machines reach no GitHub:
#      docs/fuzzing-and-supply-chain.md), the check uses a copy fetched earlier if there
#      is one no older than 90 days, saying how old it is; with none it prints
#      "ADVISORIES NOT CHECKED" and why, and leaves the run green unless
#      FLEET_REQUIRE_ADVISORIES=1. It never reports advisories as checked when they
#      were not;
#   3. a CycloneDX SBOM (JSON, spec 1.5) for each service binary (every binary of a
#      crate under services/) into target/sbom/NAME.cdx.json, each checked to parse and
#      to list its dependencies.
#
# Installs cargo-deny and cargo-cyclonedx (from crates.io, pinned) into
# ~/.cache/fleet/tools if missing: about 4 and 6 minutes on 2 cores, once.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'supply-chain: %s\n' "$*" >&2; }

readonly CARGO_DENY_VERSION=0.20.2
readonly CARGO_CYCLONEDX_VERSION=0.5.9
tools=${FLEET_TOOLS_HOME:-$HOME/.cache/fleet/tools}
export PATH="$tools/bin:$PATH"
sbom_dir=${CARGO_TARGET_DIR:-$PWD/target}/sbom

install_tool() { # crate version
  local crate=$1 version=$2
  if ! cargo "${crate#cargo-}" --version >/dev/null 2>&1; then
    say "installing $crate $version into $tools (crates.io; once)"
    cargo install --locked --quiet --root "$tools" "$crate" --version "$version"
  fi
}
install_tool cargo-deny "$CARGO_DENY_VERSION"
install_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"

# --- 1. licences, bans, sources. Not --locked: where Cargo.lock lags a Cargo.toml,
# cargo completes it as any build would, and the graph checked is the one built.
say "checking licences, duplicate crates and sources (deny.toml)"
if ! deny_log=$(cargo deny check --hide-inclusion-graph licenses bans sources 2>&1); then
  printf '%s\n' "$deny_log" >&2
  say "FAILED: licences, bans or sources (deny.toml says what is allowed, and why)"
  exit 1
fi
# Passed: one line per warning (the duplicate crates), not cargo-deny's full listing.
grep -E '^(warning|error)\[|ok$' <<<"$deny_log" | sed 's/^/supply-chain:   /' >&2 || true

# --- 2. advisories.
advisories=""
db_root=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
loud() {
  printf '\n' >&2
  printf 'supply-chain: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
  for line in "$@"; do printf 'supply-chain: !!! %s\n' "$line" >&2; done
  printf 'supply-chain: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}
say "fetching the RustSec advisory database (cargo deny fetch db)"
if fetch_log=$(timeout 300 cargo deny fetch db 2>&1); then
  say "checking advisories against the database just fetched"
  cargo deny --offline check advisories
  advisories="checked (database fetched now)"
else
  # git's own words if it got that far ("Could not resolve host: github.com"), else
  # cargo-deny's.
  reason=$( (grep -m1 '^fatal:' <<<"$fetch_log" || grep -m1 -E 'ERROR|error' <<<"$fetch_log" || true) |
    sed -E 's/^fatal: *//; s/.*(ERROR|error)\]? *//')
  copy=$(find "$db_root" -mindepth 1 -maxdepth 1 -type d -name 'advisory-db-*' 2>/dev/null | head -1)
  if [ -n "$copy" ] && fetched=$(git -C "$copy" show -s --format=%cI HEAD 2>/dev/null); then
    age_days=$((($(date +%s) - $(date -d "$fetched" +%s)) / 86400))
    loud "The advisory database could not be fetched (${reason:-see above})." \
      "Checking against the copy in $copy, last updated $fetched ($age_days days ago)." \
      "Advisories published since then are NOT checked."
    # cargo-deny itself refuses a copy older than 90 days (maximum-db-staleness).
    if cargo deny --offline check advisories; then
      advisories="checked against a copy $age_days days old (fetch failed)"
    else
      exit 1
    fi
  else
    loud "ADVISORIES NOT CHECKED: the RustSec advisory database could not be fetched" \
      "(${reason:-see above}) and no copy was fetched before on this machine." \
      "Known vulnerabilities in dependencies are NOT being looked for." \
      "This machine reaches crates.io, PyPI, npm and Debian but not GitHub, where the" \
      "database lives; see docs/fuzzing-and-supply-chain.md for what was tried and how" \
      "to run the check where GitHub is reachable. FLEET_REQUIRE_ADVISORIES=1 makes" \
      "this a failure."
    if [ "${FLEET_REQUIRE_ADVISORIES:-0}" = 1 ]; then
      exit 1
    fi
    advisories="NOT CHECKED (no advisory database)"
  fi
fi

# --- 3. SBOMs. cargo-cyclonedx writes NAME_bin.cdx.json beside each workspace member's
# Cargo.toml (it has no output directory option); they are moved to $sbom_dir at once
# (and *.cdx.json is in .gitignore). SOURCE_DATE_EPOCH: the last commit's time, so the
# same tree gives the same timestamps.
say "writing a CycloneDX SBOM for each service binary into $sbom_dir"
rm -rf "$sbom_dir"
mkdir -p "$sbom_dir"
host=$(rustc -vV | sed -n 's/^host: //p')
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s) \
  cargo cyclonedx --quiet --format json --spec-version 1.5 --describe binaries --target "$host"
mapfile -t written < <(find . \( -path ./target -o -path ./fuzz -o -path ./.git -o -path ./.state \) \
  -prune -o -name '*_bin.cdx.json' -print)
for file in "${written[@]}"; do
  case "$file" in
    ./services/*) mv "$file" "$sbom_dir/$(basename "$file" _bin.cdx.json).cdx.json" ;;
    *) rm -f "$file" ;; # the load harness's and other tools' binaries: not services
  esac
done
python3 - "$sbom_dir" <<'EOF'
import json, pathlib, sys
boms = sorted(pathlib.Path(sys.argv[1]).glob("*.cdx.json"))
if not boms:
    sys.exit("supply-chain: no SBOM was written")
for bom in boms:
    d = json.loads(bom.read_text())
    name = d["metadata"]["component"]["name"]
    components = d.get("components", [])
    if d.get("bomFormat") != "CycloneDX" or not components:
        sys.exit(f"supply-chain: {bom} is not a CycloneDX SBOM with components")
    print(f"supply-chain:   {bom.name}: {name}, {len(components)} components, "
          f"spec {d['specVersion']}, {bom.stat().st_size // 1024} KiB", file=sys.stderr)
EOF

say "summary: licences ok, bans ok, sources ok; advisories: $advisories; SBOMs in $sbom_dir"
