#!/usr/bin/env bash
# Local services for the cdp-hub test suite, all on loopback (127.0.0.1):
#
#   * Apache Kafka 4.x, one node in KRaft mode (combined broker + controller),
#     run from jars that Maven resolves once into a cache (scripts/kafka/pom.xml);
#   * PostgreSQL (Debian's packages), a private cluster with trust auth;
#   * Redis (Debian's redis-server), no persistence.
#
# Usage: scripts/services.sh up|down|status|env|purge
#        scripts/services.sh stop|start|restart kafka|postgres|redis
#        scripts/services.sh kill kafka|postgres|redis     (SIGKILL, no clean shutdown)
#        scripts/services.sh refuse postgres SECONDS       (reject new and drop open connections)
#        scripts/services.sh flush redis                   (FLUSHALL)
#
#   up      start whatever is not running yet (idempotent), wait until every
#           service really answers, then print the connection settings as
#           `export` lines on stdout:   eval "$(scripts/services.sh up)"
#   down    stop all three (idempotent); data is kept in the state folder
#   status  one line per service on stdout; exit 0 only if all three run
#   env     print the `export` lines only
#   purge   down, then delete the state folder (not the jar cache)
#
# The per-service commands are for fault drills and the fault tests (tests/test_faults.py):
#   stop SERVICE     a clean stop (Kafka: SIGTERM; PostgreSQL: pg_ctl stop -m fast; Redis: SIGTERM)
#   start SERVICE    start it again and wait until it answers
#   restart SERVICE  stop, then start
#   kill SERVICE     SIGKILL (Kafka: the broker recovers its log on the next start)
#   refuse postgres SECONDS
#                    PostgreSQL keeps running but refuses every connection to the application
#                    databases for SECONDS (pg_hba.conf reject + reload, open sessions terminated),
#                    then accepts them again; the maintenance database `postgres` stays reachable
#   flush redis      FLUSHALL (Redis loses every key; it is a cache, see docs/operations.md)
#
# All progress and error messages go to stderr; stdout carries only the
# `export` lines (up, env) or the status lines.
#
# Environment (all optional):
#   CDP_HUB_SERVICES_DIR           state folder (default: <repo>/.services)
#   CDP_HUB_CACHE                  jar cache (default: ~/.cache/cdp-hub)
#   CDP_HUB_KAFKA_VERSION          Kafka version; default: first of
#                                  4.1.2 4.1.1 4.1.0 4.0.2 that is cached, else
#                                  the first of them that Maven resolves
#   CDP_HUB_KAFKA_PORT             broker listener        (default 19092)
#   CDP_HUB_KAFKA_CONTROLLER_PORT  KRaft controller       (default 19093)
#   CDP_HUB_POSTGRES_PORT          PostgreSQL             (default 15432)
#   CDP_HUB_REDIS_PORT             Redis                  (default 16379)
#   CDP_HUB_KAFKA_READY_TIMEOUT    seconds to wait for Kafka (default 90; longer while its log shows it
#                                  is still loading partitions, up to ten times this)
#
# Needs: bash, Java 17+ and (for the first run only) Maven with access to
# Maven Central. PostgreSQL and redis-server are installed with apt-get when
# missing and we run as root. Later runs start offline.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

HOST=127.0.0.1
STATE_DIR=${CDP_HUB_SERVICES_DIR:-$REPO_ROOT/.services}
CACHE_DIR=${CDP_HUB_CACHE:-$HOME/.cache/cdp-hub}
KAFKA_PORT=${CDP_HUB_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${CDP_HUB_KAFKA_CONTROLLER_PORT:-19093}
POSTGRES_PORT=${CDP_HUB_POSTGRES_PORT:-15432}
REDIS_PORT=${CDP_HUB_REDIS_PORT:-16379}
KAFKA_READY_TIMEOUT=${CDP_HUB_KAFKA_READY_TIMEOUT:-90}
# Newest first. Kafka 4.x brokers need Java 17+, which this machine kind has.
# 4.1.2 was tested end to end (KRaft combined mode, formatted --standalone,
# aiokafka 0.12/0.14 round trips incl. idempotent and transactional
# producers); no fallback to 3.9.x was needed. Kafka 4 logs through slf4j 1.7
# and its pom brings no binding, so the pom adds log4j2 (log4j-slf4j-impl).
KAFKA_VERSION_CANDIDATES=${CDP_HUB_KAFKA_VERSION:-"4.1.2 4.1.1 4.1.0 4.0.2"}
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
POSTGRES_DB=cdp_hub
POSTGRES_SUPERUSER=postgres

KAFKA_DIR=$STATE_DIR/kafka
REDIS_DIR=$STATE_DIR/redis
PG_DIR=$STATE_DIR/postgres   # may be moved by pg_resolve_dir (see there)

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True when pid $1 is alive and its command line contains $2.
pid_matches() {
    local pid=$1 pattern=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

read_pid() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

# Print the last lines of a log file to stderr.
show_log_tail() {
    local file=$1 lines=${2:-40}
    if [ -s "$file" ]; then
        printf '[services] ---- last %s lines of %s ----\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" >&2
        printf '[services] ----\n' >&2
    fi
}

# apt-get install, running `apt-get update` first only if the plain install
# fails (e.g. no package lists yet).
apt_install() {
    is_root || die "missing packages ($*); install them (sudo apt-get install -y $*) or run this script as root"
    command -v apt-get >/dev/null || die "missing packages ($*) and no apt-get to install them"
    log "installing with apt-get: $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2 || die "apt-get update failed"
        apt-get install -y --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
    fi
}

with_lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w 300 9; then
        die "another services.sh holds $STATE_DIR/.lock"
    fi
}

# ---------------------------------------------------------------- Kafka ----

kafka_pid_file() { echo "$KAFKA_DIR/kafka.pid"; }
kafka_libs() { echo "$CACHE_DIR/kafka-$1/libs"; }

kafka_pid() { read_pid "$(kafka_pid_file)"; }

kafka_running() { pid_matches "$(kafka_pid)" 'kafka\.Kafka'; }

ensure_java() {
    command -v java >/dev/null && return 0
    apt_install default-jre-headless
}

# Echo the Kafka version whose jars are (now) in the cache; resolve them with
# Maven if none is cached yet. A libs folder counts as complete only with the
# marker file written after a successful copy.
kafka_resolve() {
    local v libs
    for v in $KAFKA_VERSION_CANDIDATES; do
        if [ -f "$(kafka_libs "$v")/.complete" ]; then
            echo "$v"
            return 0
        fi
    done
    command -v mvn >/dev/null || apt_install maven
    for v in $KAFKA_VERSION_CANDIDATES; do
        libs=$(kafka_libs "$v")
        log "resolving Kafka $v jars with Maven into $libs (one-time, needs Maven Central)"
        rm -rf "$libs.tmp"
        mkdir -p "$libs.tmp"
        if mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
                -Dkafka.version="$v" -DincludeScope=runtime \
                -DoutputDirectory="$libs.tmp" >"$libs.tmp.mvn.log" 2>&1 \
            && [ -f "$libs.tmp/kafka_2.13-$v.jar" ]; then
            rm -rf "$libs"
            mv "$libs.tmp" "$libs"
            rm -f "$libs.tmp.mvn.log"
            (cd "$libs" && ls -1 ./*.jar) >"$libs/.complete"
            echo "$v"
            return 0
        fi
        log "Maven could not resolve Kafka $v:"
        tail -n 20 "$libs.tmp.mvn.log" >&2 || true
        rm -rf "$libs.tmp"
    done
    die "could not resolve any Kafka version of: $KAFKA_VERSION_CANDIDATES"
}

kafka_write_config() {
    local out=$1 data=$2
    cat >"$out" <<EOF
# Generated by scripts/services.sh: single-node KRaft (broker + controller)
# for tests, loopback only. Regenerated on every 'up'.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$data

num.partitions=4
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# small footprint
log.segment.bytes=8388608
offsets.topic.segment.bytes=8388608
transaction.state.log.segment.bytes=8388608
log.retention.hours=24
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
}

kafka_write_log_config() {
    local out=$1 file=$2 level=$3
    cat >"$out" <<EOF
# Generated by scripts/services.sh
status = warn
shutdownHook = disable
name = cdp-hub-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $file
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $level
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.netclient.name = org.apache.kafka.clients.NetworkClient
logger.netclient.level = ERROR
EOF
}

kafka_java() {
    # $1 = libs dir, $2 = log4j2 config; rest = main class and args
    local libs=$1 logcfg=$2
    shift 2
    java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$logcfg" \
        -cp "$libs/*" "$@"
}

# Wait until the broker answers an admin request (lists topics), or fail
# with the tail of its log.
kafka_wait_ready() {
    local version=$1 libs deadline pid out size last_size=-1 last_growth=$SECONDS hard_deadline noted=
    libs=$(kafka_libs "$version")
    deadline=$((SECONDS + KAFKA_READY_TIMEOUT))
    # A broker with many partitions (a long-lived development broker) loads its logs for minutes before it
    # answers: while it is alive and its log keeps growing, wait on, up to ten times the timeout.
    hard_deadline=$((SECONDS + 10 * KAFKA_READY_TIMEOUT))
    pid=$(kafka_pid)
    cat >"$KAFKA_DIR/probe.properties" <<EOF
request.timeout.ms=3000
default.api.timeout.ms=8000
socket.connection.setup.timeout.ms=1000
socket.connection.setup.timeout.max.ms=2000
EOF
    kafka_write_log_config "$KAFKA_DIR/tools-log4j2.properties" "$KAFKA_DIR/logs/tools.log" WARN
    while :; do
        if ! pid_matches "$pid" 'kafka\.Kafka'; then
            show_log_tail "$KAFKA_DIR/logs/server.log" 40
            show_log_tail "$KAFKA_DIR/logs/stdout.log" 20
            die "Kafka (pid $pid) exited during startup; logs in $KAFKA_DIR/logs"
        fi
        if port_open "$KAFKA_PORT"; then
            if out=$(kafka_java "$libs" "$KAFKA_DIR/tools-log4j2.properties" \
                    org.apache.kafka.tools.TopicCommand --list \
                    --bootstrap-server "$HOST:$KAFKA_PORT" \
                    --command-config "$KAFKA_DIR/probe.properties" 2>&1); then
                return 0
            fi
        fi
        size=$(stat -c %s "$KAFKA_DIR/logs/server.log" 2>/dev/null || echo 0)
        if [ "$size" != "$last_size" ]; then
            last_size=$size
            last_growth=$SECONDS
        fi
        if [ "$SECONDS" -ge "$deadline" ] && [ "$SECONDS" -lt "$hard_deadline" ] \
                && [ $((SECONDS - last_growth)) -lt 20 ]; then
            [ -z "$noted" ] && log "kafka: still loading its logs after ${KAFKA_READY_TIMEOUT}s; waiting while it makes progress"
            noted=1
        elif [ "$SECONDS" -ge "$deadline" ]; then
            [ -n "${out:-}" ] && printf '%s\n' "$out" | tail -n 10 >&2
            show_log_tail "$KAFKA_DIR/logs/server.log" 40
            die "Kafka did not answer on $HOST:$KAFKA_PORT within ${KAFKA_READY_TIMEOUT}s; logs in $KAFKA_DIR/logs"
        fi
        sleep 1
    done
}

# Start Kafka in the background (no waiting). Echoes the version in use.
kafka_start() {
    local version libs data cfg new_cfg cluster_id pid
    ensure_java
    version=$(kafka_resolve)
    if kafka_running; then
        log "kafka: already running (pid $(kafka_pid))"
        return 0
    fi
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        port_open "$port" && die "port $HOST:$port is in use by another process (not our Kafka; see 'ss -ltnp')"
    done
    libs=$(kafka_libs "$version")
    mkdir -p "$KAFKA_DIR/logs"
    data=$KAFKA_DIR/data
    cfg=$KAFKA_DIR/server.properties
    new_cfg=$KAFKA_DIR/server.properties.new
    kafka_write_config "$new_cfg" "$data"
    # A KRaft log formatted for other listeners or another Kafka version is
    # of no use to tests: start from scratch then.
    if [ -d "$data" ] && { ! cmp -s "$new_cfg" "$cfg" || [ "$(cat "$KAFKA_DIR/version" 2>/dev/null)" != "$version" ]; }; then
        log "kafka: configuration or version changed; wiping $data"
        rm -rf "$data"
    fi
    mv "$new_cfg" "$cfg"
    echo "$version" >"$KAFKA_DIR/version"
    kafka_write_log_config "$KAFKA_DIR/log4j2.properties" "$KAFKA_DIR/logs/server.log" INFO
    if [ ! -f "$data/meta.properties" ]; then
        rm -rf "$data"
        # As Kafka's own random-uuid: never an id that starts with "-" (1 in 64 of base64url ids), which the
        # format tool's argument parser takes for an option ("-t: expected one argument").
        cluster_id=$(python3 -c 'import base64,uuid
while (i := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(i)' 2>/dev/null) \
            || cluster_id=$(kafka_java "$libs" "$KAFKA_DIR/log4j2.properties" kafka.tools.StorageTool random-uuid)
        log "kafka: formatting KRaft storage (cluster id $cluster_id)"
        if ! kafka_java "$libs" "$KAFKA_DIR/log4j2.properties" kafka.tools.StorageTool format \
                -t "$cluster_id" -c "$cfg" --standalone >"$KAFKA_DIR/logs/format.log" 2>&1; then
            show_log_tail "$KAFKA_DIR/logs/format.log" 30
            die "kafka: formatting storage failed"
        fi
    fi
    log "kafka: starting $version on $HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)"
    (
        cd "$KAFKA_DIR"
        # setsid: own session, so the broker outlives this shell and its
        # terminal; all stdio goes to files so $(services.sh up) never hangs.
        exec setsid nohup java -Xms256m -Xmx512m -XX:+UseG1GC \
            -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
            -Dkafka.logs.dir="$KAFKA_DIR/logs" \
            -cp "$libs/*" kafka.Kafka "$cfg" \
            </dev/null >>"$KAFKA_DIR/logs/stdout.log" 2>&1 9>&-
    ) &
    pid=$!
    echo "$pid" >"$(kafka_pid_file)"
}

kafka_stop() {
    local pid i
    pid=$(kafka_pid)
    if ! pid_matches "$pid" 'kafka\.Kafka'; then
        rm -f "$(kafka_pid_file)"
        log "kafka: not running"
        return 0
    fi
    log "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "kafka: still running after 30s; killing"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$(kafka_pid_file)"
}

kafka_status() {
    if kafka_running; then
        if port_open "$KAFKA_PORT"; then
            echo "kafka: running (pid $(kafka_pid), version $(cat "$KAFKA_DIR/version" 2>/dev/null || echo '?'), $HOST:$KAFKA_PORT)"
            return 0
        fi
        echo "kafka: starting or unhealthy (pid $(kafka_pid), $HOST:$KAFKA_PORT not answering)"
        return 1
    fi
    echo "kafka: stopped"
    return 1
}

# ----------------------------------------------------------- PostgreSQL ----

pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# The OS user that owns and runs the cluster: initdb/postgres refuse root.
pg_os_user() {
    if is_root; then echo postgres; else id -un; fi
}

# Run a PostgreSQL server binary as the cluster's OS user.
pg_as() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Directories on the way to the data folder must be traversable by the
# postgres user; if the state folder is not (e.g. under /root), keep the
# cluster under /tmp and leave a symlink in the state folder.
pg_resolve_dir() {
    is_root || return 0
    mkdir -p "$STATE_DIR"
    if [ -L "$PG_DIR" ]; then
        PG_DIR=$(readlink "$PG_DIR")
        mkdir -p "$PG_DIR"
        return 0
    fi
    if runuser -u postgres -- test -x "$STATE_DIR" 2>/dev/null; then
        return 0
    fi
    local alt
    alt=/tmp/cdp-hub-postgres-$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-12)
    log "postgres: $STATE_DIR is not reachable by user postgres; using $alt"
    mkdir -p "$alt"
    rm -rf "$PG_DIR"
    ln -s "$alt" "$PG_DIR"
    PG_DIR=$alt
}

ensure_postgres() {
    if [ -z "$(pg_bindir)" ]; then
        apt_install postgresql
        [ -n "$(pg_bindir)" ] || die "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin after install"
    fi
    if is_root && ! id postgres >/dev/null 2>&1; then
        log "creating system user postgres"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
}

pg_running() {
    local bin
    bin=$(pg_bindir) || return 1
    [ -f "$PG_DIR/data/postmaster.pid" ] || return 1
    pg_as "$bin/pg_ctl" status -D "$PG_DIR/data" >/dev/null 2>&1
}

pg_start() {
    local bin
    ensure_postgres
    bin=$(pg_bindir)
    pg_resolve_dir
    mkdir -p "$PG_DIR"
    is_root && chown postgres: "$PG_DIR"
    if pg_running; then
        log "postgres: already running"
    else
        port_open "$POSTGRES_PORT" && die "port $HOST:$POSTGRES_PORT is in use by another process (not our PostgreSQL; see 'ss -ltnp')"
        if [ ! -f "$PG_DIR/data/PG_VERSION" ] || [ "$(cat "$PG_DIR/data/PG_VERSION")" != "$(basename "$(dirname "$bin")")" ]; then
            rm -rf "$PG_DIR/data"
            log "postgres: initdb in $PG_DIR/data ($("$bin/postgres" --version))"
            if ! pg_as "$bin/initdb" -D "$PG_DIR/data" -U "$POSTGRES_SUPERUSER" \
                    --auth=trust --encoding=UTF8 --locale=C >"$PG_DIR/initdb.log" 2>&1; then
                show_log_tail "$PG_DIR/initdb.log" 30
                die "postgres: initdb failed"
            fi
            echo "include_if_exists = 'cdp_hub.conf'" >>"$PG_DIR/data/postgresql.conf"
        fi
        # Regenerated on each start so that port changes take effect.
        cat >"$PG_DIR/data/cdp_hub.conf" <<EOF
# Generated by scripts/services.sh: test cluster, loopback only, no durability
listen_addresses = '$HOST'
port = $POSTGRES_PORT
unix_socket_directories = ''
max_connections = 100
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
        is_root && chown postgres: "$PG_DIR/data/cdp_hub.conf"
        log "postgres: starting on $HOST:$POSTGRES_PORT"
        if ! pg_as "$bin/pg_ctl" start -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
                </dev/null >&2 9>&-; then
            show_log_tail "$PG_DIR/postgres.log" 30
            die "postgres: pg_ctl start failed"
        fi
    fi
    local i
    for ((i = 0; i < 300; i++)); do
        "$bin/pg_isready" -q -h "$HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" && break
        sleep 0.1
    done
    "$bin/pg_isready" -q -h "$HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" || {
        show_log_tail "$PG_DIR/postgres.log" 30
        die "postgres: not ready on $HOST:$POSTGRES_PORT after 30s"
    }
    if [ "$("$bin/psql" -h "$HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '$POSTGRES_DB'")" != 1 ]; then
        log "postgres: creating database $POSTGRES_DB"
        "$bin/createdb" -h "$HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" "$POSTGRES_DB"
    fi
}

pg_stop() {
    local bin
    bin=$(pg_bindir) || { log "postgres: not installed"; return 0; }
    [ -L "$PG_DIR" ] && PG_DIR=$(readlink "$PG_DIR")
    if pg_running; then
        log "postgres: stopping"
        pg_as "$bin/pg_ctl" stop -D "$PG_DIR/data" -m fast -w -t 60 >&2 </dev/null
    else
        log "postgres: not running"
    fi
}

pg_status() {
    [ -L "$PG_DIR" ] && PG_DIR=$(readlink "$PG_DIR")
    if pg_running; then
        if "$(pg_bindir)/pg_isready" -q -h "$HOST" -p "$POSTGRES_PORT"; then
            echo "postgres: running ($("$(pg_bindir)/postgres" --version | awk '{print "PostgreSQL " $3}'), $HOST:$POSTGRES_PORT, database $POSTGRES_DB)"
            return 0
        fi
        echo "postgres: running but not accepting connections on $HOST:$POSTGRES_PORT"
        return 1
    fi
    echo "postgres: stopped"
    return 1
}

# ---------------------------------------------------------------- Redis ----

redis_pid_file() { echo "$REDIS_DIR/redis.pid"; }
redis_pid() { read_pid "$(redis_pid_file)"; }
redis_running() { pid_matches "$(redis_pid)" 'redis-server'; }

ensure_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    apt_install redis-server redis-tools
    command -v redis-server >/dev/null || die "redis-server not found after install"
}

redis_start() {
    ensure_redis
    mkdir -p "$REDIS_DIR"
    if redis_running; then
        log "redis: already running (pid $(redis_pid))"
    else
        port_open "$REDIS_PORT" && die "port $HOST:$REDIS_PORT is in use by another process (not our Redis; see 'ss -ltnp')"
        rm -f "$(redis_pid_file)"
        log "redis: starting on $HOST:$REDIS_PORT"
        redis-server --bind "$HOST" --port "$REDIS_PORT" --save '' --appendonly no \
            --daemonize yes --pidfile "$(redis_pid_file)" --logfile "$REDIS_DIR/redis.log" \
            --dir "$REDIS_DIR" </dev/null >>"$REDIS_DIR/redis.log" 2>&1 9>&- || {
            show_log_tail "$REDIS_DIR/redis.log" 20
            die "redis: redis-server failed to start"
        }
    fi
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    show_log_tail "$REDIS_DIR/redis.log" 20
    die "redis: no PONG from $HOST:$REDIS_PORT after 10s"
}

redis_stop() {
    local pid i
    pid=$(redis_pid)
    if ! pid_matches "$pid" 'redis-server'; then
        rm -f "$(redis_pid_file)"
        log "redis: not running"
        return 0
    fi
    log "redis: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$(redis_pid_file)"
}

redis_status() {
    if redis_running; then
        if [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
            echo "redis: running (pid $(redis_pid), $HOST:$REDIS_PORT)"
            return 0
        fi
        echo "redis: running but no PONG on $HOST:$REDIS_PORT"
        return 1
    fi
    echo "redis: stopped"
    return 1
}

# ------------------------------------------------------- fault drills ----

kafka_kill() {
    local pid
    pid=$(kafka_pid)
    if ! pid_matches "$pid" 'kafka\.Kafka'; then
        log "kafka: not running"
        return 0
    fi
    log "kafka: SIGKILL (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$(kafka_pid_file)"
}

kafka_start_wait() {
    kafka_start
    kafka_wait_ready "$(cat "$KAFKA_DIR/version")"
}

pg_kill() {
    local pid
    [ -L "$PG_DIR" ] && PG_DIR=$(readlink "$PG_DIR")
    pid=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        log "postgres: not running"
        return 0
    fi
    log "postgres: SIGKILL (postmaster pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    # The backends notice the postmaster is gone and exit by themselves; wait for the port to close.
    local i
    for ((i = 0; i < 100; i++)); do port_open "$POSTGRES_PORT" || break; sleep 0.1; done
}

# Refuse connections to every database but `postgres` for $1 seconds: pg_hba.conf rejects them, open
# sessions are terminated, and the original pg_hba.conf comes back afterwards (also when interrupted).
pg_refuse() {
    local seconds=$1 bin hba
    [[ "$seconds" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "refuse postgres SECONDS: not a number: $seconds"
    bin=$(pg_bindir) || die "postgres: not installed"
    [ -L "$PG_DIR" ] && PG_DIR=$(readlink "$PG_DIR")
    pg_running || die "postgres: not running"
    hba=$PG_DIR/data/pg_hba.conf
    [ -f "$hba.cdp-hub-saved" ] || cp -p "$hba" "$hba.cdp-hub-saved"
    trap 'pg_accept' EXIT
    {
        echo "# Generated by scripts/services.sh refuse: only the maintenance database is reachable"
        echo "host postgres all $HOST/32 trust"
        echo "host all all $HOST/32 reject"
    } >"$hba"
    is_root && chown postgres: "$hba"
    pg_as "$bin/pg_ctl" reload -D "$PG_DIR/data" >/dev/null
    sleep 0.2
    "$bin/psql" -h "$HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_SUPERUSER" -d postgres -qtAc \
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
          WHERE datname IS DISTINCT FROM 'postgres' AND backend_type = 'client backend'" >/dev/null
    log "postgres: refusing connections for ${seconds}s"
    sleep "$seconds"
    pg_accept
    trap - EXIT
}

pg_accept() {
    local bin hba
    bin=$(pg_bindir) || return 0
    [ -L "$PG_DIR" ] && PG_DIR=$(readlink "$PG_DIR")
    hba=$PG_DIR/data/pg_hba.conf
    [ -f "$hba.cdp-hub-saved" ] || return 0
    mv -f "$hba.cdp-hub-saved" "$hba"
    pg_as "$bin/pg_ctl" reload -D "$PG_DIR/data" >/dev/null
    log "postgres: accepting connections again"
}

redis_kill() {
    local pid
    pid=$(redis_pid)
    if ! pid_matches "$pid" 'redis-server'; then
        log "redis: not running"
        return 0
    fi
    log "redis: SIGKILL (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$(redis_pid_file)"
}

redis_flush() {
    [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" flushall 2>&1)" = OK ] || die "redis: FLUSHALL failed"
    log "redis: flushed (FLUSHALL)"
}

# $1 = action, $2 = service: run the service's function for the action.
cmd_service() {
    local action=$1 service=${2:-}
    case "$service" in
        kafka | postgres | redis) ;;
        *) die "usage: $0 $action kafka|postgres|redis" ;;
    esac
    with_lock
    mkdir -p "$KAFKA_DIR" "$REDIS_DIR"
    case "$action:$service" in
        stop:kafka) kafka_stop ;;
        stop:postgres) pg_stop ;;
        stop:redis) redis_stop ;;
        start:kafka) kafka_start_wait ;;
        start:postgres) pg_start ;;
        start:redis) redis_start ;;
        restart:kafka) kafka_stop; kafka_start_wait ;;
        restart:postgres) pg_stop; pg_start ;;
        restart:redis) redis_stop; redis_start ;;
        kill:kafka) kafka_kill ;;
        kill:postgres) pg_kill ;;
        kill:redis) redis_kill ;;
        *) die "$action is not supported for $service" ;;
    esac
}

# ------------------------------------------------------------- commands ----

print_env() {
    cat <<EOF
export CDP_HUB_KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT
export CDP_HUB_POSTGRES_DSN=postgresql://$POSTGRES_SUPERUSER@$HOST:$POSTGRES_PORT/$POSTGRES_DB
export CDP_HUB_REDIS_URL=redis://$HOST:$REDIS_PORT/0
EOF
}

cmd_up() {
    local start=$SECONDS
    trap 'rc=$?; [ "$rc" -eq 0 ] || log "up failed; services started so far keep running: scripts/services.sh status / down"' EXIT
    with_lock
    mkdir -p "$KAFKA_DIR" "$REDIS_DIR"
    # Kafka boots in the background while PostgreSQL and Redis start.
    kafka_start
    pg_start
    redis_start
    log "kafka: waiting until the broker answers (timeout ${KAFKA_READY_TIMEOUT}s)"
    kafka_wait_ready "$(cat "$KAFKA_DIR/version")"
    log "all services up in $((SECONDS - start))s (state in $STATE_DIR)"
    print_env
}

cmd_down() {
    if [ ! -d "$STATE_DIR" ]; then
        log "nothing to stop ($STATE_DIR does not exist)"
        return 0
    fi
    with_lock
    kafka_stop
    pg_stop
    redis_stop
}

cmd_status() {
    local rc=0
    kafka_status || rc=1
    pg_status || rc=1
    redis_status || rc=1
    return "$rc"
}

cmd_purge() {
    local link=$STATE_DIR/postgres
    cmd_down
    [ -L "$link" ] && rm -rf "$(readlink "$link")"
    log "removing $STATE_DIR"
    rm -rf "$STATE_DIR"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) print_env ;;
    purge) cmd_purge ;;
    stop | start | restart | kill) cmd_service "$1" "${2:-}" ;;
    refuse)
        [ "${2:-}" = postgres ] && [ -n "${3:-}" ] || die "usage: $0 refuse postgres SECONDS"
        pg_refuse "$3"
        ;;
    flush)
        [ "${2:-}" = redis ] || die "usage: $0 flush redis"
        redis_flush
        ;;
    *)
        echo "usage: $0 up|down|status|env|purge | stop|start|restart|kill SERVICE | refuse postgres SECONDS | flush redis" >&2
        exit 2
        ;;
esac
