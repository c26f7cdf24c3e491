#!/usr/bin/env bash
# deploy/local/stack.sh: run the fleet's real local infrastructure on loopback.
#
#   stack.sh up              install what is missing, start what is not running,
#                            wait until every component really answers
#   stack.sh down [--purge]  stop what this script started (--purge: delete state)
#   stack.sh status          one line per component; exit 0 only if all healthy
#   stack.sh env             print one `export ...` line for eval
#
# Components (all bound to 127.0.0.1 only):
#   mqtt      mosquitto, TLS only           port $FLEET_STACK_MQTT_PORT  (18830)
#             (client certificate required, identity = its CN, ACL per gateway;
#             certificates made by `fleetctl certs` in $FLEET_STATE_DIR/tls on the
#             first 'up': see docs/security.md)
#   kafka     tansu (Kafka wire protocol)   port $FLEET_STACK_KAFKA_PORT (19092)
#   postgres  PostgreSQL (Debian packages)  port $FLEET_STACK_PG_PORT    (15432)
#
# Ports are deliberately not the defaults (1883/9092/5432) so the stack never
# fights with a system service that apt may have started.
#
# Other knobs: FLEET_STATE_DIR (default <repo>/.state/stack), FLEET_TANSU_HOME
# (cached tansu build, default ~/.cache/fleet/tansu-0.6.0), FLEET_STACK_WAIT_SECS
# (per-component readiness timeout, default 60), FLEET_TANSU_LOG (RUST_LOG for
# the broker, default warn), FLEET_FLEETCTL (a built fleetctl to make the
# certificates with; default: cargo run -p fleetctl).
set -euo pipefail

# ---------------------------------------------------------------------------
# configuration

# Resolve everything from the script's own location so it works from any cwd.
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd -P)
readonly SCRIPT_DIR REPO_ROOT

STATE=${FLEET_STATE_DIR:-$REPO_ROOT/.state/stack}
# Daemons run with cwd=/ (postgres) or their own dir (tansu), so a relative
# state dir would point somewhere else for them: make it absolute now.
[[ $STATE == /* ]] || STATE=$PWD/$STATE
readonly STATE
readonly LOGS=$STATE/logs RUN=$STATE/run
readonly STATE_MARKER=$STATE/.fleet-stack-state

readonly MQTT_PORT=${FLEET_STACK_MQTT_PORT:-18830}
readonly KAFKA_PORT=${FLEET_STACK_KAFKA_PORT:-19092}
readonly PG_PORT=${FLEET_STACK_PG_PORT:-15432}
readonly HOST=127.0.0.1
readonly WAIT_SECS=${FLEET_STACK_WAIT_SECS:-60}
# Seconds a freshly started process gets to write its pid file / settle before
# "not running" counts as a crash rather than "still starting".
readonly START_GRACE=5

readonly TANSU_VERSION=0.6.0
# Default features of tansu fail at start-up with FeatureNotEnabled for every
# storage engine we could use, hence dynostore + libsql (sqlite://).
readonly TANSU_FEATURES=dynostore,libsql
readonly TANSU_HOME=${FLEET_TANSU_HOME:-$HOME/.cache/fleet/tansu-$TANSU_VERSION}
readonly TANSU_BIN=$TANSU_HOME/bin/tansu
# Stable on purpose: tansu keys its stored metadata by cluster id, so changing
# it would make existing topics in tansu.db invisible.
readonly KAFKA_CLUSTER_ID=fleet-local

readonly PG_ROLE=fleet PG_PASSWORD=fleet PG_DB=fleet
readonly PG_SUPERUSER=postgres

readonly MQTT_URL="mqtts://$HOST:$MQTT_PORT"
# TLS material (`fleetctl certs --out $TLS`): ca.crt/.key, server.crt/.key, and
# clients/{identity}.crt/.key, the directory FLEET_MQTT_CERT_DIR names.
readonly TLS=$STATE/tls
readonly TLS_CLIENTS=$TLS/clients
readonly MQTT_ACL=$STATE/mqtt/acl
readonly KAFKA_BROKERS="$HOST:$KAFKA_PORT"
readonly DATABASE_URL="postgres://$PG_ROLE:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB"

readonly MQTT_PIDFILE=$RUN/mosquitto.pid MQTT_LOG=$LOGS/mosquitto.log
readonly KAFKA_PIDFILE=$RUN/tansu.pid KAFKA_LOG=$LOGS/tansu.log
readonly TANSU_BUILD_LOG=$LOGS/tansu-build.log

# ---------------------------------------------------------------------------
# small helpers

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
    log "$@"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: stack.sh up | down [--purge] | status | env
  up       install missing packages, start mosquitto, tansu and postgresql on
           127.0.0.1 and wait until each answers
  down     stop what this script started (data is kept; --purge deletes it)
  status   show each component; exit 0 only if all three answer
  env      print an export line: eval "$(deploy/local/stack.sh env)"
EOF
    exit 2
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Per-invocation scratch space for probe output; removed on any exit.
TMP=""
cleanup() { [[ -z $TMP ]] || rm -rf -- "$TMP"; }
trap cleanup EXIT
scratch() {
    [[ -n $TMP ]] || TMP=$(mktemp -d "${TMPDIR:-/tmp}/fleet-stack.XXXXXX")
    printf '%s\n' "$TMP"
}

check_port() {
    local name=$1 port=$2
    if [[ ! $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "$name must be a tcp port number (1-65535), got '$port'"
    fi
}

validate_config() {
    check_port FLEET_STACK_MQTT_PORT "$MQTT_PORT"
    check_port FLEET_STACK_KAFKA_PORT "$KAFKA_PORT"
    check_port FLEET_STACK_PG_PORT "$PG_PORT"
    [[ $MQTT_PORT != "$KAFKA_PORT" && $MQTT_PORT != "$PG_PORT" && $KAFKA_PORT != "$PG_PORT" ]] ||
        die "mqtt, kafka and postgres ports must differ (got $MQTT_PORT, $KAFKA_PORT, $PG_PORT)"
    [[ $WAIT_SECS =~ ^[0-9]+$ ]] || die "FLEET_STACK_WAIT_SECS must be a number of seconds"
    # The state path is written verbatim into mosquitto.conf and
    # postgresql.conf, neither of which has a quoting story we want to rely on.
    if [[ $STATE =~ [[:space:]\'\"\\] ]]; then
        die "state dir '$STATE' contains whitespace, quotes or backslashes; set FLEET_STATE_DIR to a plain path"
    fi
}

# Prints the pid recorded in $1 if that process is alive and its command name
# is $2; fails otherwise. The name check guards against a stale pid file whose
# pid has since been reused by something unrelated. Zombies count as dead:
# pid 1 in containers often does not reap, so a killed daemon can linger as Z.
pid_alive() {
    local pidfile=$1 comm=$2 pid state
    [[ -r $pidfile ]] || return 1
    read -r pid <"$pidfile" || [[ -n ${pid:-} ]] || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(<"/proc/$pid/comm") == "$comm" ]] || return 1
    # Field 3 of /proc/PID/stat is the state; comm (field 2) may contain
    # spaces, so strip everything up to the closing parenthesis first.
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ $state != Z && $state != X ]] || return 1
    printf '%s\n' "$pid"
}

# True if anything listens on tcp port $1 (any address: a 0.0.0.0 listener
# would also make our 127.0.0.1 bind fail).
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null
    fi
}

# Best-effort description of who holds a port, for error messages.
port_holder() {
    local port=$1 who=""
    if command -v ss >/dev/null 2>&1; then
        who=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -n 1 || true)
    fi
    printf '%s\n' "${who:-unknown process (run as root to see it)}"
}

# Refuse to start a component whose port is taken by something that is not ours.
require_port_free() {
    local component=$1 port=$2
    if port_in_use "$port"; then
        die "$component: port $HOST:$port is already in use by $(port_holder "$port"), which is not this stack's; stop it or set the port variable"
    fi
}

# Report a component failure with the tail of its log, then exit non-zero.
fail_component() {
    local component=$1 logfile=$2 reason=$3
    log "$component failed: $reason"
    if [[ -e $logfile ]]; then
        log "last 20 lines of $logfile:"
        tail -n 20 -- "$logfile" >&2 || true
    else
        log "no log at $logfile"
    fi
    exit 1
}

# Stop the process recorded in a pid file: SIGTERM, wait up to 20 s, SIGKILL.
stop_pidfile() {
    local component=$1 pidfile=$2 comm=$3 pid i
    if ! pid=$(pid_alive "$pidfile" "$comm"); then
        rm -f -- "$pidfile"
        log "$component: not running"
        return 0
    fi
    log "$component: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        pid_alive "$pidfile" "$comm" >/dev/null || break
        sleep 0.5
    done
    if pid_alive "$pidfile" "$comm" >/dev/null; then
        log "$component: pid $pid ignored SIGTERM for 20 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f -- "$pidfile"
}

# Run a privileged command for package installation.
as_admin() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not available; install the packages as root or run this script as root"
    fi
}

# ---------------------------------------------------------------------------
# packages

mosquitto_bin() {
    # /usr/sbin is often not on a non-root user's PATH.
    command -v mosquitto 2>/dev/null || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; }
}

# Newest installed PostgreSQL major's bin dir, e.g. /usr/lib/postgresql/15/bin.
pg_bin_dir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/psql ]] || continue
        best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
    done
    [[ -n $best ]] && printf '%s\n' "$best"
}

ensure_packages() {
    local missing=()
    mosquitto_bin >/dev/null || missing+=(mosquitto)
    { command -v mosquitto_pub && command -v mosquitto_sub; } >/dev/null 2>&1 || missing+=(mosquitto-clients)
    pg_bin_dir >/dev/null || missing+=(postgresql)
    ((${#missing[@]})) || return 0

    local aptlog=$LOGS/apt-install.log
    log "installing missing packages: ${missing[*]} (log: $aptlog)"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${missing[*]} by hand"
    # apt may also start the packaged system services (mosquitto on 1883,
    # postgresql on 5432); we leave those alone and never depend on them.
    if ! { as_admin apt-get update && as_admin env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } >>"$aptlog" 2>&1; then
        fail_component packages "$aptlog" "apt-get install ${missing[*]} failed"
    fi
    mosquitto_bin >/dev/null || die "mosquitto still missing after apt-get install"
    pg_bin_dir >/dev/null || die "no /usr/lib/postgresql/*/bin with initdb, pg_ctl and psql after apt-get install"
}

# ---------------------------------------------------------------------------
# tansu binary (built once, cached outside the repo)

tansu_has_features() {
    # `tansu --help` ends with "Storage engines: dynostore, libsql"; a binary
    # without libsql would die at start-up with FeatureNotEnabled.
    "$TANSU_BIN" --help 2>/dev/null | grep -q '^Storage engines:.*libsql'
}

# A `cargo install` for our root that was not started by this script (so it
# does not hold our lock), e.g. one kicked off by hand.
foreign_tansu_build_running() {
    command -v pgrep >/dev/null 2>&1 || return 1
    # Trailing space so --root /x/tansu does not match --root /x/tansu-other.
    pgrep -af 'cargo install tansu' 2>/dev/null | sed 's/$/ /' | grep -qF -- "--root $TANSU_HOME "
}

ensure_tansu() {
    if [[ -x $TANSU_BIN ]] && ! foreign_tansu_build_running; then
        tansu_has_features || die "kafka: $TANSU_BIN was built without the libsql feature; delete $TANSU_HOME and rerun 'up' to rebuild it"
        return 0
    fi
    mkdir -p -- "$TANSU_HOME"
    # Serialise builds: two concurrent cargo installs into one --root would
    # each take ~13 minutes of both cores and race on the final copy.
    local lock=$TANSU_HOME/.build.lock
    exec 8>"$lock"
    if ! flock -n 8; then
        log "kafka: another stack.sh is building tansu (lock $lock); waiting for it"
        flock 8
    fi
    if foreign_tansu_build_running; then
        log "kafka: a 'cargo install tansu --root $TANSU_HOME' is already running; waiting for it instead of starting a second build"
        while foreign_tansu_build_running; do sleep 5; done
    fi
    if [[ ! -x $TANSU_BIN ]]; then
        command -v cargo >/dev/null 2>&1 || die "kafka: $TANSU_BIN is missing and cargo is not on PATH; install rust (rustup) and rerun"
        log "kafka: building tansu $TANSU_VERSION with cargo install (takes ~13 minutes on 2 cores); log: $TANSU_BUILD_LOG"
        if ! cargo install tansu --version "$TANSU_VERSION" --locked \
            --features "$TANSU_FEATURES" --root "$TANSU_HOME" >"$TANSU_BUILD_LOG" 2>&1; then
            fail_component kafka "$TANSU_BUILD_LOG" "cargo install tansu $TANSU_VERSION failed (it needs a C compiler; see the log)"
        fi
        log "kafka: built $TANSU_BIN"
    fi
    flock -u 8
    exec 8>&-
    [[ -x $TANSU_BIN ]] || die "kafka: $TANSU_BIN still missing after the build; see $TANSU_BUILD_LOG"
    tansu_has_features || die "kafka: $TANSU_BIN was built without the libsql feature; delete $TANSU_HOME and rerun 'up' to rebuild it"
}

# ---------------------------------------------------------------------------
# mqtt (mosquitto)

mqtt_pid() { pid_alive "$MQTT_PIDFILE" mosquitto; }

# The certificates: made once per state dir by `fleetctl certs` (the same code the
# harness uses to issue gateway certificates later under the same CA). A built
# fleetctl is used when FLEET_FLEETCTL names one; otherwise cargo builds it. The
# canary's gateway (gw-canary, fleet-canary's default identity) gets one too, so
# `fleet-canary` runs against the stack with no arguments.
readonly CANARY_GATEWAY=gw-canary
tls_ensure() {
    if [[ -s $TLS/ca.crt && -s $TLS/server.crt && -s $TLS_CLIENTS/fleet-ingest.crt && -s $TLS_CLIENTS/fleet-operator.crt && -s $TLS_CLIENTS/$CANARY_GATEWAY.crt ]]; then
        return 0
    fi
    local tlslog=$LOGS/certs.log
    log "mqtt: making the local CA and certificates in $TLS (log: $tlslog)"
    if [[ -n ${FLEET_FLEETCTL:-} ]]; then
        "$FLEET_FLEETCTL" certs --out "$TLS" --gateway "$CANARY_GATEWAY" >>"$tlslog" 2>&1 ||
            fail_component mqtt "$tlslog" "$FLEET_FLEETCTL certs --out $TLS failed"
    else
        command -v cargo >/dev/null 2>&1 || die "mqtt: certificates missing in $TLS and cargo is not on PATH to build fleetctl (or set FLEET_FLEETCTL)"
        (cd -- "$REPO_ROOT" && cargo run --quiet -p fleetctl -- certs --out "$TLS" --gateway "$CANARY_GATEWAY") >>"$tlslog" 2>&1 9>&- ||
            fail_component mqtt "$tlslog" "cargo run -p fleetctl -- certs --out $TLS failed"
    fi
}

# Who may use which topic (contract §2). The broker takes a client's identity from
# its certificate's CN (use_identity_as_username), so a gateway can only ever be
# itself: it writes its own readings and status and reads its own acks. Ingest
# reads every gateway's readings (its shared subscription) and statuses, and
# writes every gateway's acks; the operator (fleetctl, the harness) reads the fleet's topics and
# uses the probe topics. Anything not granted is denied.
mqtt_write_acl() {
    cat >"$MQTT_ACL" <<'EOF'
# generated by deploy/local/stack.sh; rewritten on every 'up' (docs/security.md)
user fleet-ingest
topic read $share/ingest/fleet/v1/+/readings/+
topic read fleet/v1/+/readings/+
topic write fleet/v1/+/acks
topic read fleet/v1/+/status

user fleet-operator
topic read fleet/v1/#
topic readwrite fleet/probe/#

# every gateway, %u being its certificate's CN = its gateway id
pattern write fleet/v1/%u/readings/pb
pattern write fleet/v1/%u/readings/json
pattern write fleet/v1/%u/status
pattern read fleet/v1/%u/acks
EOF
}

mqtt_write_config() {
    local conf=$STATE/mqtt/mosquitto.conf
    mqtt_write_acl
    # mosquitto started as root drops to the "mosquitto" user by default, which
    # usually cannot write a state dir under a home directory; run it as
    # whoever runs this script instead (it only listens on loopback).
    cat >"$conf" <<EOF
# generated by deploy/local/stack.sh; rewritten on every 'up'
pid_file $MQTT_PIDFILE
user $(id -un)

# TLS only (no plain listener): every client shows a certificate from the fleet's
# CA, and its CN is its identity for the ACL.
listener $MQTT_PORT $HOST
cafile $TLS/ca.crt
certfile $TLS/server.crt
keyfile $TLS/server.key
tls_version tlsv1.2
require_certificate true
use_identity_as_username true
allow_anonymous false
acl_file $MQTT_ACL

persistence true
persistence_location $STATE/mqtt/data/
autosave_interval 60
persistent_client_expiration 7d
max_queued_messages 200000
max_inflight_messages 1000

log_dest file $MQTT_LOG
log_timestamp_format %Y-%m-%dT%H:%M:%S
EOF
    printf '%s\n' "$conf"
}

mqtt_start() {
    local pid conf bin
    if pid=$(mqtt_pid); then
        # A broker started by an older stack.sh listens in plain MQTT, while 'env'
        # now says mqtts://: restart it with the TLS configuration.
        if grep -q '^require_certificate true' "$STATE/mqtt/mosquitto.conf" 2>/dev/null; then
            log "mqtt: already running (pid $pid)"
            return 0
        fi
        log "mqtt: running (pid $pid) without TLS (started by an older stack.sh); restarting it with TLS"
        stop_pidfile mqtt "$MQTT_PIDFILE" mosquitto
    fi
    rm -f -- "$MQTT_PIDFILE"
    require_port_free mqtt "$MQTT_PORT"
    bin=$(mosquitto_bin) || die "mqtt: mosquitto binary not found"
    mkdir -p -- "$STATE/mqtt/data"
    tls_ensure
    conf=$(mqtt_write_config)
    log "mqtt: starting mosquitto on $HOST:$MQTT_PORT (config $conf)"
    # -d daemonises and writes pid_file; early errors go to stderr, which we
    # append to the same log so a failure report shows them.
    # Each client is an open file in mosquitto, whose max_connections is
    # unlimited by default: its soft `ulimit -n` is the real cap, and a common
    # default soft limit of 1024 is far below the 10,000 idle gateways
    # fleet-loadtest holds. So mosquitto alone gets the soft limit raised to the
    # hard one (kept as it is if that cannot be done).
    (
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        exec "$bin" -c "$conf" -d
    ) >>"$MQTT_LOG" 2>&1 9>&- ||
        fail_component mqtt "$MQTT_LOG" "mosquitto -c $conf -d exited with an error"
}

# Real round trip: subscribe to a unique topic, publish to it until the
# subscriber receives the payload or its -W timeout expires. Republishing
# avoids racing the subscription without leaving retained messages behind.
mqtt_probe() {
    local wait=${1:-10} dir topic payload subpid got=""
    command -v mosquitto_sub >/dev/null 2>&1 || return 1
    dir=$(scratch)
    topic="fleet/probe/stack-$$-$RANDOM$RANDOM"
    payload="probe-$RANDOM$RANDOM"
    [[ -s $TLS_CLIENTS/fleet-operator.crt ]] || return 1
    # As the operator identity (the only one the ACL lets use fleet/probe/#).
    local tls=(--cafile "$TLS/ca.crt" --cert "$TLS_CLIENTS/fleet-operator.crt" --key "$TLS_CLIENTS/fleet-operator.key")
    mosquitto_sub "${tls[@]}" -h "$HOST" -p "$MQTT_PORT" -t "$topic" -C 1 -W "$wait" >"$dir/mqtt.out" 2>/dev/null &
    subpid=$!
    while kill -0 "$subpid" 2>/dev/null; do
        mosquitto_pub "${tls[@]}" -h "$HOST" -p "$MQTT_PORT" -t "$topic" -m "$payload" >/dev/null 2>&1 || true
        sleep 0.3
    done
    wait "$subpid" 2>/dev/null || return 1
    got=$(<"$dir/mqtt.out")
    [[ $got == "$payload" ]]
}

# ---------------------------------------------------------------------------
# kafka (tansu)

kafka_pid() { pid_alive "$KAFKA_PIDFILE" tansu; }

kafka_start() {
    local pid
    if pid=$(kafka_pid); then
        log "kafka: already running (pid $pid)"
        return 0
    fi
    rm -f -- "$KAFKA_PIDFILE"
    require_port_free kafka "$KAFKA_PORT"
    mkdir -p -- "$STATE/kafka"
    log "kafka: starting tansu broker on $HOST:$KAFKA_PORT (data $STATE/kafka/tansu.db)"
    # Why run from $STATE/kafka with a relative sqlite URL: tansu resolves the
    # sqlite URL's host+path against its cwd (sqlite:///abs/path becomes
    # cwd/abs/path), and it loads a .env from its cwd; the state dir has none.
    # The clap flags also read generic env vars (STORAGE_ENGINE,
    # SCHEMA_REGISTRY, OTEL_EXPORTER_OTLP_ENDPOINT, ...); we pass every flag we
    # rely on and unset the optional ones so a developer's shell cannot leak in.
    # setsid detaches it from our session (a ^C during 'up' must not kill it);
    # setsid and nohup exec in place, so $! is the broker's own pid.
    (
        cd -- "$STATE/kafka" &&
            exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT \
                RUST_LOG="${FLEET_TANSU_LOG:-warn}" NO_COLOR=1 \
                setsid nohup "$TANSU_BIN" broker \
                --cluster-id "$KAFKA_CLUSTER_ID" \
                --listener-url "tcp://$HOST:$KAFKA_PORT" \
                --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
                --storage-engine "sqlite://tansu.db" \
                </dev/null >>"$KAFKA_LOG" 2>&1 9>&-
    ) &
    echo "$!" >"$KAFKA_PIDFILE"
}

# Real Kafka protocol request: a Metadata call via `tansu topic list`.
kafka_probe() {
    local wait=${1:-10} dir
    [[ -x $TANSU_BIN ]] || return 1
    dir=$(scratch)
    # cwd matters for tansu's .env loading; use the scratch dir.
    (cd -- "$dir" && timeout "$wait" "$TANSU_BIN" topic list --broker "tcp://$HOST:$KAFKA_PORT") \
        >"$dir/kafka.out" 2>/dev/null || return 1
    [[ $(head -c 1 "$dir/kafka.out") == "[" ]]
}

# ---------------------------------------------------------------------------
# postgres

# The server's files belong to "postgres" when we are root (postgres refuses
# to run as root), otherwise to the current user.
pg_user() { if is_root; then echo "$PG_SUPERUSER"; else id -un; fi; }

# Run a command as the server's OS user. cd / first: the caller's cwd (e.g.
# /root) may be unreadable for postgres, and initdb/pg_ctl call getcwd().
as_pg() {
    if is_root; then
        (cd / && exec runuser -u "$PG_SUPERUSER" -- "$@")
    else
        "$@"
    fi
}

# The directory behind $STATE/pg, as the server user must see it (a symlink
# under /root would not be traversable for postgres).
pg_home() {
    if [[ -e $STATE/pg ]]; then readlink -f -- "$STATE/pg"; else printf '%s\n' "$STATE/pg"; fi
}

pg_pid() {
    local home
    home=$(pg_home)
    # postmaster.pid's first line is the server pid.
    pid_alive "$home/data/postmaster.pid" postgres
}

pg_log() {
    local home
    home=$(pg_home)
    if [[ -e $home/postgres.log ]]; then printf '%s\n' "$home/postgres.log"; else printf '%s\n' "$LOGS/postgres.log"; fi
}

# Decide where the PostgreSQL area lives and create it. Normally $STATE/pg.
# If the server user cannot traverse the state dir (e.g. a clone under /root,
# mode 700) or the socket path would exceed the unix socket limit (~107
# bytes), use /var/tmp/fleet-stack-<hash of state path>/pg and leave a
# symlink at $STATE/pg. The log then lives next to the data, with a symlink
# in $STATE/logs, because the server itself opens it.
pg_prepare_home() {
    local link=$STATE/pg owner home alt
    owner=$(pg_user)
    if is_root && ! id -u "$PG_SUPERUSER" >/dev/null 2>&1; then
        die "postgres: OS user '$PG_SUPERUSER' does not exist (it comes with the postgresql package)"
    fi
    if [[ -L $link && ! -e $link ]]; then
        log "postgres: $link points to missing $(readlink -- "$link"); initialising a fresh cluster there"
        mkdir -p -- "$(readlink -- "$link")"
    fi
    if [[ ! -e $link ]]; then
        local sock="$STATE/pg/sock/.s.PGSQL.$PG_PORT" reachable=1
        if is_root && ! runuser -u "$PG_SUPERUSER" -- test -x "$STATE" 2>/dev/null; then
            reachable=0
        fi
        if ((reachable)) && ((${#sock} <= 100)); then
            mkdir -p -- "$link"
        else
            alt=/var/tmp/fleet-stack-$(printf '%s' "$STATE" | sha256sum | cut -c1-12)
            if [[ -e $alt && $(stat -c %U -- "$alt") != "$(id -un)" && $(stat -c %U -- "$alt") != "$owner" ]]; then
                die "postgres: $alt exists but belongs to $(stat -c %U -- "$alt"); remove it or set FLEET_STATE_DIR"
            fi
            mkdir -p -- "$alt/pg"
            chmod 0711 -- "$alt"
            ln -sfn -- "$alt/pg" "$link"
            if ((reachable)); then
                log "note: postgres data is in $alt/pg ($link is a symlink) because the socket path under $STATE is too long"
            else
                log "note: postgres data is in $alt/pg ($link is a symlink) because user $PG_SUPERUSER cannot traverse $STATE"
            fi
        fi
    fi
    home=$(pg_home)
    mkdir -p -- "$home/data" "$home/sock"
    local pglog=$LOGS/postgres.log
    if [[ $home != "$STATE/pg" ]]; then
        pglog=$home/postgres.log
        touch -- "$pglog"
        ln -sfn -- "$pglog" "$LOGS/postgres.log"
    else
        touch -- "$pglog"
    fi
    if is_root; then
        chown "$owner:" -- "$home" "$home/data" "$home/sock" "$pglog"
    fi
    # initdb insists on 0700/0750 for the data dir; the socket dir is 0700 so
    # local "trust" auth only admits the server's own OS user (and root).
    chmod 0700 -- "$home/data" "$home/sock"
}

pg_write_config() {
    local home=$1 data=$1/data
    # Our settings live in their own file so 'up' can rewrite them (e.g. after
    # a port change) without editing initdb's postgresql.conf beyond one include.
    as_pg tee "$data/fleet-stack.conf" >/dev/null <<EOF
# generated by deploy/local/stack.sh; rewritten on every 'up'
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$home/sock'
unix_socket_permissions = 0700
password_encryption = scram-sha-256
EOF
    if ! grep -q "^include_if_exists = 'fleet-stack.conf'" "$data/postgresql.conf"; then
        printf "\ninclude_if_exists = 'fleet-stack.conf'\n" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi
}

pg_start() {
    local bin home data pglog pid ver
    bin=$(pg_bin_dir) || die "postgres: no /usr/lib/postgresql/*/bin found"
    pg_prepare_home
    home=$(pg_home)
    data=$home/data
    pglog=$(pg_log)
    if pid=$(pg_pid); then
        log "postgres: already running (pid $pid)"
        return 0
    fi
    ver=$(basename -- "$(dirname -- "$bin")")
    if [[ ! -f $data/PG_VERSION ]]; then
        log "postgres: initialising cluster in $data (PostgreSQL $ver)"
        as_pg "$bin/initdb" -D "$data" -U "$PG_SUPERUSER" --auth-host=scram-sha-256 --auth-local=trust \
            --encoding=UTF8 --locale=C >>"$pglog" 2>&1 ||
            fail_component postgres "$pglog" "initdb -D $data failed"
    elif [[ $(<"$data/PG_VERSION") != "$ver" ]]; then
        die "postgres: $data was created by PostgreSQL $(<"$data/PG_VERSION") but the newest installed is $ver; run 'down --purge' to start over"
    fi
    pg_write_config "$home"
    require_port_free postgres "$PG_PORT"
    log "postgres: starting on $HOST:$PG_PORT (data $data)"
    # The server logs to $pglog itself; pg_ctl's own chatter is only shown on failure.
    local out
    if ! out=$(as_pg "$bin/pg_ctl" -D "$data" -l "$pglog" -w -t "$WAIT_SECS" start 2>&1 9>&-); then
        log "postgres: pg_ctl said: $out"
        fail_component postgres "$pglog" "pg_ctl start -D $data failed"
    fi
}

# Create role and database idempotently; the password is (re)set every time
# because FLEET_DATABASE_URL hard-codes it.
pg_bootstrap() {
    local bin home pglog
    bin=$(pg_bin_dir)
    home=$(pg_home)
    pglog=$(pg_log)
    if ! "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$home/sock" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres \
        >>"$pglog" 2>&1 <<EOF; then
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN;
  END IF;
END
\$\$;
-- CREATEDB: tests give each run a database of its own (fleet_store::testing).
ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
EOF
        fail_component postgres "$pglog" "creating role/database '$PG_ROLE' via $home/sock failed"
    fi
}

pg_probe() {
    local wait=${1:-5} bin out
    bin=$(pg_bin_dir) || return 1
    out=$(PGCONNECT_TIMEOUT=$wait timeout $((wait + 2)) "$bin/psql" "$DATABASE_URL" -X -q -t -A -c 'select 1' 2>/dev/null) ||
        return 1
    [[ $out == 1 ]]
}

# Readiness probe used by 'up': the fleet role must exist before the URL
# probe can pass, and pg_ctl -w has already waited for the server, so
# bootstrap once, then probe.
PG_BOOTSTRAPPED=0
pg_probe_bootstrap() {
    if ((!PG_BOOTSTRAPPED)); then
        pg_bootstrap
        PG_BOOTSTRAPPED=1
    fi
    pg_probe "$@"
}

pg_stop() {
    local bin home pid
    if ! pid=$(pg_pid); then
        log "postgres: not running"
        return 0
    fi
    bin=$(pg_bin_dir) || die "postgres: running as pid $pid but no pg_ctl found to stop it"
    home=$(pg_home)
    log "postgres: stopping pid $pid"
    # fast = roll back open transactions and shut down cleanly; immediate only
    # if that does not finish in time.
    if ! as_pg "$bin/pg_ctl" -D "$home/data" -m fast -w -t 20 stop >/dev/null 2>&1; then
        log "postgres: fast shutdown timed out, using immediate"
        as_pg "$bin/pg_ctl" -D "$home/data" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------------------
# readiness

# Poll a probe until it passes or WAIT_SECS elapse. A process that is gone
# after START_GRACE seconds is reported as crashed straight away.
wait_healthy() {
    local component=$1 pidfn=$2 probefn=$3 logfile=$4 start now
    start=$SECONDS
    while :; do
        now=$((SECONDS - start))
        if ! "$pidfn" >/dev/null && ((now >= START_GRACE)); then
            fail_component "$component" "$logfile" "process exited (or never started) shortly after start"
        fi
        if "$probefn" 5; then
            return 0
        fi
        ((now < WAIT_SECS)) || fail_component "$component" "$logfile" "no answer on $HOST within ${WAIT_SECS}s"
        sleep 1
    done
}

# ---------------------------------------------------------------------------
# commands

prepare_state_dir() {
    mkdir -p -- "$STATE" "$LOGS" "$RUN"
    touch -- "$STATE_MARKER"
    # Keep the state out of git without touching the repo's .gitignore:
    # "*" also ignores this .gitignore itself.
    [[ -e $STATE/.gitignore ]] || printf '*\n' >"$STATE/.gitignore"
    if is_root; then
        # The postgres server writes its log under $LOGS when it can reach it.
        chmod 0755 -- "$STATE" "$LOGS"
    fi
}

# Serialise up/down so two invocations do not race on pid files. Daemons are
# started with 9>&- so they do not inherit (and forever hold) this lock.
lock_stack() {
    exec 9>"$RUN/stack.lock"
    flock -w 1200 9 || die "another stack.sh up/down holds $RUN/stack.lock"
}

# FLEET_MQTT_CERT_DIR holds every identity's certificate (each process picks its
# own: a gateway its id, ingest fleet-ingest, fleetctl fleet-operator);
# FLEET_STACK_CERTS is where the harness issues new gateways' certificates
# (`fleetctl certs --out`).
print_env() {
    printf 'export FLEET_MQTT_URL=%s FLEET_MQTT_CA_FILE=%s FLEET_MQTT_CERT_DIR=%s FLEET_STACK_CERTS=%s FLEET_KAFKA_BROKERS=%s FLEET_DATABASE_URL=%s\n' \
        "$MQTT_URL" "$TLS/ca.crt" "$TLS_CLIENTS" "$TLS" "$KAFKA_BROKERS" "$DATABASE_URL"
}

# One row per component; returns non-zero if any is not healthy.
status_table() {
    local ok=0 row name pid state health addr
    printf '%-9s %-8s %-8s %-16s %s\n' COMPONENT STATE PID ADDRESS HEALTH
    for row in "mqtt:mqtt_pid:mqtt_probe:$MQTT_PORT" \
        "kafka:kafka_pid:kafka_probe:$KAFKA_PORT" \
        "postgres:pg_pid:pg_probe:$PG_PORT"; do
        IFS=: read -r name pidfn probefn addr <<<"$row"
        if pid=$("$pidfn" 2>/dev/null); then state=running; else state=stopped pid=-; fi
        if "$probefn" 3; then health=answering; else
            health="not answering"
            ok=1
        fi
        [[ $state == running ]] || ok=1
        printf '%-9s %-8s %-8s %-16s %s\n' "$name" "$state" "$pid" "$HOST:$addr" "$health"
    done
    return "$ok"
}

cmd_up() {
    validate_config
    prepare_state_dir
    lock_stack
    ensure_packages
    ensure_tansu
    mqtt_start
    kafka_start
    pg_start
    wait_healthy mqtt mqtt_pid mqtt_probe "$MQTT_LOG"
    wait_healthy kafka kafka_pid kafka_probe "$KAFKA_LOG"
    wait_healthy postgres pg_pid pg_probe_bootstrap "$(pg_log)"
    log "all components answer; state in $STATE, logs in $LOGS"
    status_table || true
    log "to use it: eval \"\$(${BASH_SOURCE[0]} env)\""
}

cmd_down() {
    local purge=0
    case ${1:-} in
        "") ;;
        --purge) purge=1 ;;
        *) usage ;;
    esac
    if [[ ! -d $STATE ]]; then
        log "nothing to stop: no state dir at $STATE"
        return 0
    fi
    mkdir -p -- "$RUN"
    lock_stack
    stop_pidfile kafka "$KAFKA_PIDFILE" tansu
    stop_pidfile mqtt "$MQTT_PIDFILE" mosquitto
    pg_stop
    if ((purge)); then
        # Refuse to rm -rf a directory this script did not create (e.g. a
        # mistaken FLEET_STATE_DIR=$HOME).
        [[ -e $STATE_MARKER ]] || die "refusing to purge $STATE: it has no $(basename -- "$STATE_MARKER") marker"
        if [[ -L $STATE/pg ]]; then
            local target
            target=$(readlink -- "$STATE/pg")
            if [[ $target == /var/tmp/fleet-stack-*/pg ]]; then
                log "purging $(dirname -- "$target")"
                rm -rf -- "$(dirname -- "$target")"
            fi
        fi
        log "purging $STATE"
        rm -rf -- "$STATE"
    else
        log "stopped; data kept in $STATE"
    fi
}

cmd_status() {
    validate_config
    status_table
}

main() {
    local cmd=${1:-}
    [[ $# -eq 0 ]] || shift
    case $cmd in
        up) [[ $# -eq 0 ]] || usage; cmd_up ;;
        down) [[ $# -le 1 ]] || usage; cmd_down "$@" ;;
        status) [[ $# -eq 0 ]] || usage; cmd_status ;;
        env) [[ $# -eq 0 ]] || usage; validate_config; print_env ;;
        *) usage ;;
    esac
}

main "$@"
