# shellcheck shell=bash
# Dropline: shared helpers for scripts/start and scripts/test.
#
# Source this file; it is not meant to be executed. It makes sure the local
# MariaDB, Redis and RabbitMQ are reachable, starting (or, as root, apt-installing)
# them when they are not.
#
# Functions:
#   ensure_mariadb ensure_redis ensure_rabbitmq ensure_services
#   enable_keyspace_events
#   dl_mysql [mysql args...]          mysql client connected like Dropline is
#   dl_redis_cli [redis-cli args...]  redis-cli connected like Dropline is
#   dl_cleanup_mysql_databases PREFIX     drop databases named PREFIX*
#   dl_cleanup_rabbitmq PREFIX            delete queues/exchanges named PREFIX*
#   dl_cleanup_redis_keys PREFIX          delete keys named PREFIX*
#
# Overrides (same variables the Dropline binary reads):
#   DROPLINE_MYSQL__URL  default mysql://root@127.0.0.1:3306/dropline
#   DROPLINE_REDIS__URL  default redis://127.0.0.1:6379
#   DROPLINE_AMQP__URL   default amqp://guest:guest@127.0.0.1:5672/%2f
# A service is managed (started/installed) only when its URL points at a
# loopback host on the standard port; otherwise it is only checked for
# reachability (TCP).
#
# All messages go to stderr, prefixed with "[dropline]".

set -euo pipefail

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "[dropline] scripts/lib/services.sh is a library: source it, do not run it" >&2
    exit 2
fi

if [[ -n "${_DL_SERVICES_SH_LOADED:-}" ]]; then
    return 0
fi
_DL_SERVICES_SH_LOADED=1

# Server binaries and rabbitmqctl live in sbin, which a non-root PATH may lack.
case ":${PATH}:" in
    *:/usr/sbin:*) ;;
    *) PATH="${PATH}:/usr/sbin:/sbin" ;;
esac

_DL_APT_UPDATED=""
_DL_APT_LOG="${TMPDIR:-/tmp}/dropline-apt.log"

dl_log() {
    printf '[dropline] %s\n' "$*" >&2
}

dl_warn() {
    printf '[dropline] warning: %s\n' "$*" >&2
}

dl_die() {
    printf '[dropline] error: %s\n' "$*" >&2
    exit 1
}

# dl_help SCRIPT: print SCRIPT's usage, the comment block under its shebang (every line up to
# the first that is not a comment), so --help follows the header as it is edited.
dl_help() {
    awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$1"
}

_dl_have() {
    command -v "$1" >/dev/null 2>&1
}

# _dl_tcp_open HOST PORT: true if a TCP connection can be opened (2 s limit).
_dl_tcp_open() {
    # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

_dl_urldecode() {
    local s="${1//+/ }"
    printf '%b' "${s//%/\\x}"
}

# _dl_parse_url URL DEFAULT_PORT
# Sets DL_URL_HOST, DL_URL_PORT, DL_URL_USER, DL_URL_PASS.
# Handles scheme://[user[:pass]@]host[:port][/path][?query]; IPv6 as [::1].
_dl_parse_url() {
    local url="$1" default_port="$2" rest userinfo="" hostport
    rest="${url#*://}"
    rest="${rest%%[/?#]*}"
    if [[ "${rest}" == *@* ]]; then
        userinfo="${rest%@*}"
        hostport="${rest##*@}"
    else
        hostport="${rest}"
    fi
    DL_URL_USER=""
    DL_URL_PASS=""
    if [[ -n "${userinfo}" ]]; then
        if [[ "${userinfo}" == *:* ]]; then
            DL_URL_USER="$(_dl_urldecode "${userinfo%%:*}")"
            DL_URL_PASS="$(_dl_urldecode "${userinfo#*:}")"
        else
            DL_URL_USER="$(_dl_urldecode "${userinfo}")"
        fi
    fi
    if [[ "${hostport}" == \[* ]]; then
        DL_URL_HOST="${hostport%%]*}"
        DL_URL_HOST="${DL_URL_HOST#[}"
        DL_URL_PORT="${hostport#*]}"
        DL_URL_PORT="${DL_URL_PORT#:}"
    elif [[ "${hostport}" == *:* ]]; then
        DL_URL_HOST="${hostport%%:*}"
        DL_URL_PORT="${hostport#*:}"
    else
        DL_URL_HOST="${hostport}"
        DL_URL_PORT=""
    fi
    DL_URL_HOST="${DL_URL_HOST:-127.0.0.1}"
    DL_URL_PORT="${DL_URL_PORT:-${default_port}}"
}

_dl_is_loopback() {
    case "$1" in
        localhost | 127.* | ::1 | "") return 0 ;;
        *) return 1 ;;
    esac
}

# _dl_managed HOST PORT STD_PORT: true if this script should start/install it.
_dl_managed() {
    _dl_is_loopback "$1" && [[ "$2" == "$3" ]]
}

# _dl_wait NAME SECONDS INTERVAL HINT CMD...: run CMD until it succeeds or time runs out.
_dl_wait() {
    local name="$1" secs="$2" interval="$3" hint="$4"
    shift 4
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS > deadline)); then
            dl_die "${name} did not come up within ${secs}s${hint:+ (${hint})}"
        fi
        sleep "${interval}"
    done
}

# _dl_check_external NAME HOST PORT SECONDS: reachability only, for non-local URLs.
_dl_check_external() {
    local name="$1" host="$2" port="$3" secs="$4"
    if _dl_tcp_open "${host}" "${port}"; then
        dl_log "${name}: reachable at ${host}:${port} (external, not managed here)"
        return 0
    fi
    dl_log "${name}: ${host}:${port} not reachable yet (external, not managed here), waiting up to ${secs}s"
    _dl_wait "${name}" "${secs}" 1 "external service at ${host}:${port}; start it yourself" \
        _dl_tcp_open "${host}" "${port}"
    dl_log "${name}: reachable at ${host}:${port}"
}

# _dl_apt_install PACKAGE: install a Debian package, or explain what to install and exit.
_dl_apt_install() {
    local pkg="$1"
    if [[ "${EUID}" -ne 0 ]]; then
        dl_die "${pkg} is not installed and this is not root; install it with: sudo apt-get install -y ${pkg}"
    fi
    if ! _dl_have apt-get; then
        dl_die "${pkg} is not installed and apt-get is not available; install ${pkg} by hand"
    fi
    if [[ -z "${_DL_APT_UPDATED}" ]]; then
        dl_log "apt: apt-get update (log: ${_DL_APT_LOG})"
        if ! apt-get update >>"${_DL_APT_LOG}" 2>&1; then
            tail -n 20 "${_DL_APT_LOG}" >&2 || true
            dl_die "apt-get update failed; install ${pkg} by hand: apt-get install -y ${pkg}"
        fi
        _DL_APT_UPDATED=1
    fi
    dl_log "${pkg}: not installed, installing with apt-get (log: ${_DL_APT_LOG})"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkg}" >>"${_DL_APT_LOG}" 2>&1; then
        tail -n 20 "${_DL_APT_LOG}" >&2 || true
        dl_die "apt-get install ${pkg} failed; install it by hand: apt-get install -y ${pkg}"
    fi
    dl_log "${pkg}: installed"
}

# _dl_mkdir_owned DIR OWNER[:GROUP] [MODE]: create DIR if missing, owned by OWNER when that user exists.
_dl_mkdir_owned() {
    local dir="$1" owner="$2" mode="${3:-}"
    [[ -d "${dir}" ]] && return 0
    mkdir -p "${dir}"
    if [[ "${EUID}" -eq 0 ]] && id -u "${owner%%:*}" >/dev/null 2>&1; then
        chown "${owner}" "${dir}" 2>/dev/null || chown "${owner%%:*}" "${dir}" || true
    fi
    if [[ -n "${mode}" ]]; then
        chmod "${mode}" "${dir}"
    fi
}

# ---------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------

_dl_mysql_target() {
    _dl_parse_url "${DROPLINE_MYSQL__URL:-mysql://root@127.0.0.1:3306/dropline}" 3306
    DL_MYSQL_HOST="${DL_URL_HOST}"
    DL_MYSQL_PORT="${DL_URL_PORT}"
    DL_MYSQL_USER="${DL_URL_USER:-root}"
    DL_MYSQL_PASS="${DL_URL_PASS}"
}

# dl_mysql [ARGS...]: the mysql client, over TCP, with Dropline's credentials.
dl_mysql() {
    _dl_mysql_target
    if [[ -n "${DL_MYSQL_PASS}" ]]; then
        MYSQL_PWD="${DL_MYSQL_PASS}" mysql --protocol=tcp --connect-timeout=5 \
            -h "${DL_MYSQL_HOST}" -P "${DL_MYSQL_PORT}" -u "${DL_MYSQL_USER}" "$@"
    else
        mysql --protocol=tcp --connect-timeout=5 \
            -h "${DL_MYSQL_HOST}" -P "${DL_MYSQL_PORT}" -u "${DL_MYSQL_USER}" "$@"
    fi
}

# Server answers on 127.0.0.1:3306 (mysqladmin ping is 0 even on "access denied").
_dl_mariadb_alive() {
    if _dl_have mysqladmin; then
        timeout 10 mysqladmin --protocol=tcp -h127.0.0.1 -P3306 -uroot --connect-timeout=2 ping \
            >/dev/null 2>&1
    else
        _dl_tcp_open 127.0.0.1 3306
    fi
}

# Log in over TCP with Dropline's credentials; on a fresh Debian install, let
# root@localhost also log in with an empty password.
_dl_mariadb_login() {
    local out
    _dl_mysql_target
    if out="$(dl_mysql -e 'select 1' 2>&1 >/dev/null)"; then
        return 0
    fi
    if [[ "${out}" == *"Access denied"* && "${DL_MYSQL_USER}" == root && -z "${DL_MYSQL_PASS}" \
        && "${EUID}" -eq 0 ]] \
        && mysql --protocol=socket -uroot -e 'select 1' >/dev/null 2>&1; then
        dl_log "mariadb: root can only log in through the unix socket; allowing empty-password TCP login for root@localhost (ALTER USER ... IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''))"
        mysql --protocol=socket -uroot -e \
            "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" \
            || dl_die "mariadb: ALTER USER root@localhost failed"
        if out="$(dl_mysql -e 'select 1' 2>&1 >/dev/null)"; then
            return 0
        fi
    fi
    dl_die "mariadb: login as ${DL_MYSQL_USER}@${DL_MYSQL_HOST}:${DL_MYSQL_PORT} failed: ${out}"
}

ensure_mariadb() {
    _dl_mysql_target
    if ! _dl_managed "${DL_MYSQL_HOST}" "${DL_MYSQL_PORT}" 3306; then
        _dl_check_external mariadb "${DL_MYSQL_HOST}" "${DL_MYSQL_PORT}" 60
        return 0
    fi
    if _dl_mariadb_alive; then
        _dl_mariadb_login
        dl_log "mariadb: running"
        return 0
    fi
    if [[ ! -x /usr/sbin/mariadbd ]]; then
        _dl_apt_install mariadb-server
    fi
    if ! _dl_mariadb_alive; then
        if _dl_tcp_open 127.0.0.1 3306; then
            dl_log "mariadb: port 3306 open but not answering yet, waiting"
        else
            if [[ "${EUID}" -ne 0 ]]; then
                dl_die "mariadb: not running and this is not root; start it with: sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
            fi
            _dl_mkdir_owned /run/mysqld mysql:mysql 0755
            dl_log "mariadb: not running, starting"
            local extra=()
            # mariadbd refuses to run as root unless the config names a user
            # (a stock config may leave that to systemd's User=mysql).
            if _dl_have my_print_defaults && ! my_print_defaults --mysqld 2>/dev/null | grep -q '^--user='; then
                extra=(-- --user=mysql)
            fi
            start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd "${extra[@]}" \
                || dl_die "mariadb: start-stop-daemon failed"
        fi
        _dl_wait mariadb 60 1 "127.0.0.1:3306; see /var/log/mysql/ or syslog" _dl_mariadb_alive
        dl_log "mariadb: started"
    else
        dl_log "mariadb: running (started by the package install)"
    fi
    _dl_mariadb_login
}

# dl_mysql_databases PREFIX: the names of the databases starting with PREFIX, one a line.
dl_mysql_databases() {
    local prefix="$1"
    [[ "${prefix}" =~ ^[A-Za-z0-9_]+$ ]] || dl_die "bad database prefix: ${prefix}"
    dl_mysql -N -B -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE '${prefix//_/\\_}%'"
}

# dl_cleanup_mysql_databases PREFIX: drop every database whose name starts with PREFIX.
dl_cleanup_mysql_databases() {
    local prefix="$1" names sql="" n=0 db
    names="$(dl_mysql_databases "${prefix}")" || dl_die "mariadb: could not list databases"
    while IFS= read -r db; do
        [[ -n "${db}" ]] || continue
        sql+="DROP DATABASE IF EXISTS \`${db//\`/\`\`}\`;"
        n=$((n + 1))
    done <<<"${names}"
    if ((n > 0)); then
        dl_mysql -e "${sql}" || dl_die "mariadb: could not drop stale ${prefix}* databases"
    fi
    dl_log "mariadb: dropped ${n} stale ${prefix}* database(s)"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

_dl_redis_target() {
    _dl_parse_url "${DROPLINE_REDIS__URL:-redis://127.0.0.1:6379}" 6379
    DL_REDIS_HOST="${DL_URL_HOST}"
    DL_REDIS_PORT="${DL_URL_PORT}"
    if [[ -n "${DROPLINE_REDIS__URL:-}" ]]; then
        DL_REDIS_ARGS=(--no-auth-warning -u "${DROPLINE_REDIS__URL}")
    else
        DL_REDIS_ARGS=(-h 127.0.0.1 -p 6379)
    fi
}

# dl_redis_cli [ARGS...]: redis-cli connected to Dropline's Redis.
dl_redis_cli() {
    _dl_redis_target
    redis-cli "${DL_REDIS_ARGS[@]}" "$@"
}

_dl_redis_ok() {
    local reply
    reply="$(timeout 3 redis-cli "${DL_REDIS_ARGS[@]}" ping 2>/dev/null)" || return 1
    [[ "${reply}" == PONG ]]
}

ensure_redis() {
    _dl_redis_target
    if ! _dl_managed "${DL_REDIS_HOST}" "${DL_REDIS_PORT}" 6379; then
        _dl_check_external redis "${DL_REDIS_HOST}" "${DL_REDIS_PORT}" 20
        return 0
    fi
    if _dl_have redis-cli && _dl_redis_ok; then
        dl_log "redis: running"
        return 0
    fi
    if ! _dl_have redis-server || ! _dl_have redis-cli; then
        _dl_apt_install redis-server
    fi
    if _dl_redis_ok; then
        dl_log "redis: running (started by the package install)"
        return 0
    fi
    if _dl_tcp_open 127.0.0.1 6379; then
        dl_log "redis: port 6379 open but not answering PONG yet, waiting"
    else
        _dl_mkdir_owned /var/lib/redis redis:redis 0750
        _dl_mkdir_owned /var/log/redis redis:adm 2750
        dl_log "redis: not running, starting"
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log \
            || dl_die "redis: redis-server failed to start (see /var/log/redis/ci.log)"
    fi
    _dl_wait redis 20 0.25 "127.0.0.1:6379; see /var/log/redis/ci.log" _dl_redis_ok
    dl_log "redis: started"
}

# enable_keyspace_events: expired-key notifications, used by the waiting room.
enable_keyspace_events() {
    local reply
    _dl_redis_target
    if reply="$(redis-cli "${DL_REDIS_ARGS[@]}" config set notify-keyspace-events Ex 2>&1)" \
        && [[ "${reply}" == OK ]]; then
        dl_log "redis: notify-keyspace-events set to Ex"
    else
        dl_warn "redis: could not set notify-keyspace-events Ex (${reply:-no reply}); expiry notifications may not arrive"
    fi
}

# dl_redis_keys PREFIX: the keys whose names start with PREFIX, one a line (SCAN).
dl_redis_keys() {
    local prefix="$1"
    [[ "${prefix}" =~ ^[A-Za-z0-9_.:-]+$ ]] || dl_die "bad redis key prefix: ${prefix}"
    _dl_redis_target
    redis-cli "${DL_REDIS_ARGS[@]}" --scan --pattern "${prefix}*"
}

# dl_cleanup_redis_keys PREFIX: delete every key whose name starts with PREFIX.
dl_cleanup_redis_keys() {
    local prefix="$1" out keys=()
    out="$(dl_redis_keys "${prefix}")" || dl_die "redis: could not scan for ${prefix}* keys"
    if [[ -n "${out}" ]]; then
        mapfile -t keys <<<"${out}"
    fi
    if ((${#keys[@]} > 0)); then
        printf '%s\n' "${keys[@]}" \
            | xargs -r -d '\n' -n 500 redis-cli "${DL_REDIS_ARGS[@]}" del >/dev/null \
            || dl_die "redis: could not delete ${prefix}* keys"
    fi
    dl_log "redis: deleted ${#keys[@]} stale ${prefix}* key(s)"
}

# ---------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------

_dl_amqp_target() {
    _dl_parse_url "${DROPLINE_AMQP__URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" 5672
    DL_AMQP_HOST="${DL_URL_HOST}"
    DL_AMQP_PORT="${DL_URL_PORT}"
}

# rabbitmq-diagnostics needs the Erlang cookie: usable as root (or with a cookie).
_dl_rabbit_cli_usable() {
    _dl_have rabbitmq-diagnostics && { [[ "${EUID}" -eq 0 ]] || [[ -r "${HOME:-/nonexistent}/.erlang.cookie" ]]; }
}

_dl_rabbitmq_ok() {
    _dl_tcp_open 127.0.0.1 5672 || return 1
    if _dl_rabbit_cli_usable; then
        timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1
    fi
}

_dl_rabbitmq_installed() {
    _dl_have rabbitmq-server || [[ -x /usr/sbin/rabbitmq-server ]]
}

ensure_rabbitmq() {
    _dl_amqp_target
    if ! _dl_managed "${DL_AMQP_HOST}" "${DL_AMQP_PORT}" 5672; then
        _dl_check_external rabbitmq "${DL_AMQP_HOST}" "${DL_AMQP_PORT}" 120
        return 0
    fi
    if _dl_rabbitmq_ok; then
        dl_log "rabbitmq: running"
        return 0
    fi
    if ! _dl_rabbitmq_installed; then
        _dl_apt_install rabbitmq-server
    fi
    if _dl_rabbitmq_ok; then
        dl_log "rabbitmq: running (started by the package install)"
        return 0
    fi
    if _dl_tcp_open 127.0.0.1 5672 \
        || { _dl_rabbit_cli_usable && timeout 30 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }; then
        dl_log "rabbitmq: node is up but the broker is not ready yet, waiting"
    else
        if [[ "${EUID}" -ne 0 ]]; then
            dl_die "rabbitmq: not running and this is not root; start it with: sudo rabbitmq-server -detached"
        fi
        dl_log "rabbitmq: not running, starting"
        rabbitmq-server -detached || dl_die "rabbitmq: rabbitmq-server -detached failed"
    fi
    _dl_wait rabbitmq 120 2 "127.0.0.1:5672; see /var/log/rabbitmq/" _dl_rabbitmq_ok
    dl_log "rabbitmq: started"
}

# dl_cleanup_rabbitmq PREFIX: delete queues (and exchanges) whose name starts with
# PREFIX, in every vhost, with one rabbitmqctl call. Local broker only.
dl_cleanup_rabbitmq() {
    local prefix="$1" out q n=0
    [[ "${prefix}" =~ ^[A-Za-z0-9_.-]+$ ]] || dl_die "bad rabbitmq name prefix: ${prefix}"
    _dl_amqp_target
    if ! _dl_managed "${DL_AMQP_HOST}" "${DL_AMQP_PORT}" 5672 || ! _dl_have rabbitmqctl; then
        dl_log "rabbitmq: broker is not local (or rabbitmqctl missing); skipping ${prefix}* cleanup"
        return 0
    fi
    if out="$(timeout 60 rabbitmqctl eval "
        P = <<\"${prefix}\">>, L = byte_size(P),
        M = fun(N) -> byte_size(N) >= L andalso binary:part(N, 0, L) =:= P end,
        Qs = [Q || Q <- rabbit_amqqueue:list(), M(element(4, amqqueue:get_name(Q)))],
        _ = [catch rabbit_amqqueue:delete(Q, false, false, <<\"dropline-scripts\">>) || Q <- Qs],
        Xs = [element(2, X) || X <- rabbit_exchange:list(), M(element(4, element(2, X)))],
        _ = [catch rabbit_exchange:delete(XN, false, <<\"dropline-scripts\">>) || XN <- Xs],
        {length(Qs), length(Xs)}." 2>&1)" && [[ "${out}" =~ ^\{([0-9]+),([0-9]+)\}$ ]]; then
        dl_log "rabbitmq: deleted ${BASH_REMATCH[1]} stale ${prefix}* queue(s) and ${BASH_REMATCH[2]} exchange(s)"
        return 0
    fi
    # Fallback (internal API changed?): one rabbitmqctl call per queue, default vhost.
    dl_warn "rabbitmq: bulk cleanup failed (${out}); deleting ${prefix}* queues one by one"
    while IFS= read -r q; do
        [[ "${q}" == "${prefix}"* ]] || continue
        timeout 30 rabbitmqctl -q delete_queue "${q}" >/dev/null 2>&1 || dl_warn "rabbitmq: could not delete queue ${q}"
        n=$((n + 1))
    done < <(timeout 30 rabbitmqctl list_queues -q name 2>/dev/null || true)
    dl_log "rabbitmq: deleted ${n} stale ${prefix}* queue(s)"
}

# ---------------------------------------------------------------------------

ensure_services() {
    ensure_mariadb
    ensure_redis
    ensure_rabbitmq
}
