#!/usr/bin/env bash
# The main job: the labelled smoke fleet through the whole pipeline on this machine.
#
# A fresh demo stack (real Mosquitto, Kafka-protocol broker and PostgreSQL on loopback,
# state in .state/demo), the registry imported, three clinics' reference receivers,
# then ingest, the streaming detector, the notifier and the fleet API; a gateway process
# replays the smoke scenario's 23,177 readings as its pumps' home gateways would, and
# the clinics' pages are counted at the end. The services stop when the demo ends,
# except the fleet API, which keeps serving the dashboard (the demo ends by printing its
# address and a login); the stack keeps running (`deploy/local/stack.sh down` with
# FLEET_STATE_DIR=.state/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\ndemo: %s\n' "$*" >&2; }

export FLEET_STATE_DIR=${FLEET_DEMO_STATE_DIR:-$PWD/.state/demo}
demo=$FLEET_STATE_DIR/run
# The pages' signing secret shared by the demo clinics and the notifier.
export FLEET_SIGNING_SECRET=${FLEET_SIGNING_SECRET:-local-development-signing-secret}

# A previous demo's API (left serving its dashboard) goes before the fresh stack.
if [ -f "$demo/api.pid" ]; then
  kill -TERM "$(cat "$demo/api.pid")" 2>/dev/null || true
  rm -f "$demo/api.pid"
fi

say "starting a fresh demo stack (state in $FLEET_STATE_DIR)"
deploy/local/stack.sh down --purge >/dev/null 2>&1 || true
deploy/local/stack.sh up
eval "$(deploy/local/stack.sh env)"
export FLEET_MQTT_URL FLEET_KAFKA_BROKERS FLEET_DATABASE_URL
mkdir -p "$demo/logs" "$demo/pages"

say "building the services"
cargo build --quiet -p fleetctl -p fleet-ingest -p fleet-detector -p fleet-notifier \
  -p fleet-api -p fleet-gateway -p fleet-archiver
bin=${CARGO_TARGET_DIR:-target}/debug

say "checking every component with the project's own clients"
"$bin/fleetctl" stack status

# The repository carries the small scenario; the shared ones are used when present.
scenarios=(services/core/tests/data/*.readings.jsonl.gz)
for extra in ../shared/scenarios/*.readings.jsonl.gz; do
  [ -e "$extra" ] && scenarios+=("$extra")
done
for file in "${scenarios[@]}"; do
  say "validating $file"
  "$bin/fleetctl" readings validate "$file"
done

say "importing the registry (pumps, gateways, clinics)"
"$bin/fleetctl" registry import deploy/local/registry.toml

pids=()
stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap stop_services EXIT
start() { # NAME ARGS...: runs a service in the background, its log in $demo/logs
  local name=$1; shift
  "$@" >"$demo/logs/$name.log" 2>&1 &
  pids+=($!)
}
ready() { # PORT: /readyz answers 200
  local status
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
  read -r _ status _ <&3 || true
  exec 3<&-
  [ "$status" = 200 ]
}
wait_ready() { # NAME PORT
  for _ in $(seq 600); do ready "$2" && return 0; sleep 0.1; done
  echo "demo: $1 did not become ready; its log: $demo/logs/$1.log" >&2
  tail -20 "$demo/logs/$1.log" >&2
  exit 1
}

say "starting three clinics' receivers, ingest, detector, notifier, archiver and the fleet API"
for n in 1 2 3; do
  FLEET_RECEIVER_SECRET=$FLEET_SIGNING_SECRET start "clinic-00$n" \
    "$bin/fleetctl" receiver --listen "127.0.0.1:5007$n" --clinic-id "clinic-00$n" \
    --out "$demo/pages/clinic-00$n.jsonl"
done
start ingest "$bin/fleet-ingest"
start detector "$bin/fleet-detector"
start notifier "$bin/fleet-notifier"
# The API outlives the demo, so its dashboard can be tried afterwards (the stack keeps
# running too); the next demo run or `kill $(cat $demo/api.pid)` stops it.
setsid "$bin/fleet-api" >"$demo/logs/api.log" 2>&1 </dev/null &
echo $! >"$demo/api.pid"
start archiver "$bin/fleet-archiver"
wait_ready ingest 9181
wait_ready detector 9183
wait_ready notifier 9184
wait_ready archiver 9185

say "replaying the smoke fleet through its gateways (23,177 readings, about a minute)"
# Paced, one reading per gateway every 40 ms (an hour of a pump's history), so the
# pumps' histories advance together as live pumps' would. Faster, a gateway held up
# for a moment falls hours of event time behind the others in its partition, and the
# detector rightly reports its refill as missed until the reading arrives (at 20 ms
# the demo paged 20 such false alarms); unpaced, one gateway runs days ahead.
"$bin/fleet-gateway" --fleet --exit-when-drained \
  --replay services/core/tests/data/smoke.readings.jsonl.gz \
  --replay-batch 1 --replay-interval 40ms \
  --state-dir "$demo/gateways" >"$demo/logs/gateways.log" 2>&1

say "waiting for the pages to settle"
count() { cat "$demo"/pages/*.jsonl 2>/dev/null | wc -l; }
last=-1
for _ in $(seq 120); do
  now=$(count)
  [ "$now" -gt 0 ] && [ "$now" = "$last" ] && break
  last=$now
  sleep 2
done

say "pages the clinics received (kind, state, priority)"
for file in "$demo"/pages/*.jsonl; do
  echo "$(basename "$file" .jsonl): $(wc -l <"$file") pages"
  python3 - "$file" <<'PY'
import collections, json, sys
counts = collections.Counter()
for line in open(sys.argv[1]):
    p = json.loads(line)
    counts[(p["kind"], p["state"], p["priority"])] += 1
for (kind, state, priority), n in sorted(counts.items()):
    print(f"  {n:3} {kind} {state} {priority}")
PY
done
total=$(count)
[ "$total" -gt 0 ] || { echo "demo: no page reached a clinic; logs in $demo/logs" >&2; exit 1; }
say "the surveillance archive (PostgreSQL)"
psql "$FLEET_DATABASE_URL" -Atc "SELECT format('  %s readings, %s pump-days, %s pump events, %s alarm events',
  (SELECT count(*) FROM reading), (SELECT count(*) FROM pump_day),
  (SELECT count(*) FROM pump_event), (SELECT count(*) FROM alarm_event))"
say "the fleet API (HTTP/JSON on 127.0.0.1:8080, gRPC on 127.0.0.1:50051), as clinic-001"
# A token for a clinic-001 user: a new one each run (the old one stops working).
token=$("$bin/fleetctl" user rotate demo-clinic-001 2>/dev/null) ||
  token=$("$bin/fleetctl" user add demo-clinic-001 --role clinic --clinic clinic-001 2>/dev/null)
python3 - "$token" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(
    "http://127.0.0.1:8080/api/v1/alarms?active=true",
    headers={"Authorization": "Bearer " + sys.argv[1]},
)
alarms = json.load(urllib.request.urlopen(request, timeout=10))
print(f"  GET /api/v1/alarms?active=true: {len(alarms)} active alarms of clinic-001's pumps")
for a in alarms[:5]:
    print(f"    {a['priority']:6} {a['kind']:15} {a['pump_id']}  raised {a['raised_at']}")
PY
say "surveillance report over the smoke scenario's span (fleetctl report surveillance)"
mkdir -p "$demo/reports"
span=$(python3 -c 'import json, sys; t = json.load(open(sys.argv[1])); print(t["start"], t["end"])' \
  services/core/tests/data/smoke.truth.json)
"$bin/fleetctl" report surveillance --from "${span% *}" --to "${span#* }" \
  --svg "$demo/reports/survival.svg" >"$demo/reports/surveillance.md" 2>"$demo/logs/report.log"
sed -n '/^## Exposure/,/^## Alarms/p' "$demo/reports/surveillance.md" | grep '^|' | sed 's/^/  /'
echo "  the whole report: $demo/reports/surveillance.md; survival curves: $demo/reports/survival.svg"
say "done: $total signed pages delivered; logs in $demo/logs, pages in $demo/pages"
echo "  the stack keeps running: FLEET_STATE_DIR=$FLEET_STATE_DIR deploy/local/stack.sh down"
say "the clinic dashboard: http://127.0.0.1:8080/"
echo "  log in as clinic-001's demo-clinic-001 with this access token:"
echo "  $token"
echo "  (the fleet API keeps serving it; kill \$(cat $demo/api.pid) stops it)"
