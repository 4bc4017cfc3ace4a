# shellcheck shell=bash
# shellcheck disable=SC2034 # fo_* results are globals the caller (compose/chaos) reads
# Dropline: the private servers of compose/chaos's failover series (--failover redis|rabbit), on
# loopback, started per run and stopped after it; never the machine's shared Redis or RabbitMQ.
#
#   fo_redis_start DIR     a primary, a replica and three Sentinels (quorum 2, down after 1 s),
#                          as testkit/src/redis_server.rs' SentinelGroup; sets fo_redis_url
#                          (redis+sentinel://s1,s2,s3/<master>) and fo_master
#   fo_redis_primary       the port of the primary as the Sentinels see it now
#   fo_redis_failover      kill -9 of the primary; waits for the Sentinels to promote the replica;
#                          restarts the old primary as a replica of the new one; sets
#                          fo_old_primary, fo_new_primary, fo_failover_seconds and
#                          fo_unreplicated (bytes of the primary's replication stream the
#                          replica had not acknowledged at the kill) and fo_lost_bytes (the
#                          primary's offset at the kill past the one the replica was promoted
#                          at). DL_CHAOS_REDIS_CUT_MS=N cuts the replica off N ms before the
#                          kill, so that N ms of writes are lost for sure. Call it directly,
#                          not in $(...): it starts a server.
#   fo_redis_stop
#   fo_rabbit_start DIR    three RabbitMQ nodes clustered (as testkit/src/rabbit_server.rs'
#                          PrivateRabbit: own node name, AMQP and distribution ports, Mnesia, logs,
#                          no plugins); sets fo_rabbit_port[1..3], fo_rabbit_node[1..3]
#   fo_rabbit_kill N SECS  kill -9 of node N's Erlang VM, SECS down, started again on its Mnesia;
#                          waits until it is back in the cluster; sets fo_rabbit_down_seconds
#   fo_rabbit_ctl N ARGS   rabbitmqctl against node N
#   fo_rabbit_stop
#   fo_stripe_start DIR    a private localstripe (.venv-localstripe, as testkit/src/localstripe.rs);
#                          sets fo_stripe_base
#   fo_stripe_stop
#
# Source it after scripts/lib/services.sh and compose/lib/topology.sh (free_port, dl_log).

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "[dropline] compose/lib/failover.sh is a library: source it, do not run it" >&2
    exit 2
fi

fo_redis_dir=""
fo_redis_pids=()
declare -A fo_redis_pid_of=()
fo_redis_url=""
fo_master="dlchaos-master"
fo_sentinel_ports=()
fo_failover_seconds=""
fo_unreplicated=""
fo_old_primary=""
fo_new_primary=""
fo_lost_bytes=""

_fo_redis_server() {
    local port="$1"
    shift
    redis-server --port "${port}" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "${fo_redis_dir}" --logfile "${fo_redis_dir}/redis-${port}.log" "$@" &
    fo_redis_pid_of[${port}]=$!
    fo_redis_pids+=("$!")
}

_fo_wait_port() {
    local port="$1" what="$2" deadline=$((SECONDS + 20))
    until redis-cli -p "${port}" ping >/dev/null 2>&1; do
        ((SECONDS < deadline)) || dl_die "failover: ${what} on ${port} did not answer within 20 s"
        sleep 0.1
    done
}

fo_redis_start() {
    local primary replica i port file deadline ok
    fo_redis_dir="$1"
    mkdir -p "${fo_redis_dir}"
    primary="$(free_port)"
    replica="$(free_port)"
    _fo_redis_server "${primary}"
    _fo_wait_port "${primary}" "the primary"
    # Keyspace events for the expiry worker (it also asks; a promoted replica keeps the setting).
    _fo_redis_server "${replica}" --replicaof 127.0.0.1 "${primary}" --notify-keyspace-events Ex
    redis-cli -p "${primary}" config set notify-keyspace-events Ex >/dev/null
    _fo_wait_port "${replica}" "the replica"
    # Synced (a full sync waits repl-diskless-sync-delay, 5 s by default, before it starts).
    deadline=$((SECONDS + 30))
    until redis-cli -p "${replica}" info replication | tr -d '\r' | grep -qx 'master_link_status:up'; do
        ((SECONDS < deadline)) || dl_die "failover: the replica did not sync within 30 s"
        sleep 0.2
    done
    fo_sentinel_ports=()
    for i in 1 2 3; do
        port="$(free_port)"
        file="${fo_redis_dir}/sentinel-${i}.conf"
        printf 'sentinel monitor %s 127.0.0.1 %s 2\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n' \
            "${fo_master}" "${primary}" "${fo_master}" "${fo_master}" "${fo_master}" >"${file}"
        redis-server "${file}" --sentinel --port "${port}" --bind 127.0.0.1 \
            --logfile "${fo_redis_dir}/sentinel-${i}.log" &
        fo_redis_pids+=("$!")
        fo_sentinel_ports+=("${port}")
    done
    for port in "${fo_sentinel_ports[@]}"; do _fo_wait_port "${port}" "a Sentinel"; done
    # Formed: every Sentinel knows the replica and the two other Sentinels.
    deadline=$((SECONDS + 30))
    while :; do
        ok=0
        for port in "${fo_sentinel_ports[@]}"; do
            if [[ "$(redis-cli -p "${port}" sentinel master "${fo_master}" 2>/dev/null \
                | awk 'prev == "num-slaves" {s = $1} prev == "num-other-sentinels" {o = $1} {prev = $1} END {print s + 0, o + 0}')" == "1 2" ]]; then
                ok=$((ok + 1))
            fi
        done
        ((ok == 3)) && break
        ((SECONDS < deadline)) || dl_die "failover: the Sentinel group did not form within 30 s (${fo_redis_dir})"
        sleep 0.5
    done
    fo_redis_url="redis+sentinel://127.0.0.1:${fo_sentinel_ports[0]},127.0.0.1:${fo_sentinel_ports[1]},127.0.0.1:${fo_sentinel_ports[2]}/${fo_master}"
    dl_log "failover: Redis primary ${primary}, replica ${replica}, Sentinels ${fo_sentinel_ports[*]}"
}

fo_redis_primary() {
    local port
    for port in "${fo_sentinel_ports[@]}"; do
        if redis-cli -p "${port}" sentinel get-master-addr-by-name "${fo_master}" 2>/dev/null | sed -n 2p | grep -E '^[0-9]+$'; then
            return 0
        fi
    done
    return 1
}

fo_redis_failover() {
    local old new started deadline offsets cut_ms="${DL_CHAOS_REDIS_CUT_MS:-0}" auth=() promoted_at
    old="$(fo_redis_primary)" || dl_die "failover: no Sentinel names the primary"
    fo_lost_bytes="?"
    if ((cut_ms > 0)); then
        # Writes lost for sure: the replica is cut off (a password it does not know, then its
        # link killed: it cannot come back) and the primary keeps taking writes for cut_ms on
        # the connections it has, then dies. Existing clients and the Sentinels' links stay
        # authenticated.
        auth=(--no-auth-warning -a "cut${RANDOM}${RANDOM}")
        redis-cli -p "${old}" config set requirepass "${auth[2]}" >/dev/null
        redis-cli -p "${old}" "${auth[@]}" client kill type replica >/dev/null
        sleep "$(printf '%d.%03d' $((cut_ms / 1000)) $((cut_ms % 1000)))"
    fi
    # What the primary had sent and what its replica had acknowledged (acks come once a
    # second, so this is an upper bound of what the replica lacks), just before the kill.
    offsets="$(redis-cli -p "${old}" "${auth[@]}" info replication 2>/dev/null | tr -d '\r' | awk -F'[:,=]' '
        $1 == "master_repl_offset" {m = $2} $1 ~ /^slave[0-9]+$/ {for (i = 2; i < NF; i++) if ($i == "offset") r = $(i + 1)}
        END {print m + 0, m - r}')" || offsets="0 ?"
    fo_unreplicated="${offsets#* }"
    started="$(date +%s.%N)"
    kill -KILL "${fo_redis_pid_of[${old}]}" 2>/dev/null || true
    wait "${fo_redis_pid_of[${old}]}" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    while :; do
        new="$(fo_redis_primary || true)"
        if [[ -n "${new}" && "${new}" != "${old}" ]] \
            && redis-cli -p "${new}" role 2>/dev/null | head -1 | grep -qx master; then
            break
        fi
        ((SECONDS < deadline)) || dl_die "failover: no replica promoted within 60 s of killing ${old}"
        sleep 0.1
    done
    fo_failover_seconds="$(python3 -c 'import sys,time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "${started}")"
    # Lost: the old primary's offset at the kill past the offset the replica was promoted at
    # (second_repl_offset - 1); at least this much, since the primary wrote on until the kill.
    promoted_at="$(redis-cli -p "${new}" info replication 2>/dev/null | tr -d '\r' | awk -F: '$1 == "second_repl_offset" {print $2 - 1}')"
    if [[ "${promoted_at}" =~ ^[0-9]+$ ]]; then
        fo_lost_bytes=$((${offsets%% *} - promoted_at))
        ((fo_lost_bytes >= 0)) || fo_lost_bytes=0
    fi
    # The old primary comes back empty as a replica of the new one (Sentinel would tell it so).
    _fo_redis_server "${old}" --replicaof 127.0.0.1 "${new}" --notify-keyspace-events Ex
    fo_old_primary="${old}"
    fo_new_primary="${new}"
    if declare -F event >/dev/null; then
        # compose/chaos's timeline.
        event "Redis promotion lost ${fo_lost_bytes} bytes of replication stream (replica cut off ${cut_ms} ms before the kill)"
    fi
}

fo_redis_stop() {
    local pid
    for pid in "${fo_redis_pids[@]}"; do kill -KILL "${pid}" 2>/dev/null || true; done
    for pid in "${fo_redis_pids[@]}"; do wait "${pid}" 2>/dev/null || true; done
    fo_redis_pids=()
}

# --- RabbitMQ ------------------------------------------------------------------------------------

fo_rabbit_dir=""
declare -A fo_rabbit_port=()
declare -A fo_rabbit_dist=()
declare -A fo_rabbit_node=()
fo_rabbit_down_seconds=""
fo_rabbit_bin="${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}"

fo_rabbit_ctl() {
    local n="$1"
    shift
    timeout 60 "${fo_rabbit_bin}/rabbitmqctl" -n "${fo_rabbit_node[${n}]}" "$@"
}

_fo_rabbit_launch() {
    local n="$1" d="${fo_rabbit_dir}/node-$1"
    mkdir -p "${d}"
    printf '[].\n' >"${d}/enabled_plugins"
    printf 'listeners.tcp.default = %s\nloopback_users = none\n' "${fo_rabbit_port[${n}]}" >"${d}/rabbitmq.conf"
    RABBITMQ_NODENAME="${fo_rabbit_node[${n}]}" RABBITMQ_NODE_PORT="${fo_rabbit_port[${n}]}" \
        RABBITMQ_DIST_PORT="${fo_rabbit_dist[${n}]}" RABBITMQ_MNESIA_BASE="${d}/mnesia" \
        RABBITMQ_LOG_BASE="${d}/log" RABBITMQ_PID_FILE="${d}/node.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="${d}/enabled_plugins" RABBITMQ_CONFIG_FILE="${d}/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="${d}/advanced.config" \
        setsid "${fo_rabbit_bin}/rabbitmq-server" >>"${d}/server.out" 2>&1 </dev/null &
}

_fo_rabbit_await() {
    local n="$1" deadline=$((SECONDS + 120))
    until fo_rabbit_ctl "${n}" -q await_startup --timeout 5 >/dev/null 2>&1 \
        && (exec 3<>"/dev/tcp/127.0.0.1/${fo_rabbit_port[${n}]}") 2>/dev/null; do
        ((SECONDS < deadline)) || { tail -n 20 "${fo_rabbit_dir}/node-${n}/server.out" >&2; dl_die "failover: RabbitMQ node ${n} did not start within 120 s"; }
        sleep 0.5
    done
}

fo_rabbit_start() {
    local n
    fo_rabbit_dir="$1"
    mkdir -p "${fo_rabbit_dir}"
    for n in 1 2 3; do
        fo_rabbit_port[${n}]="$(free_port)"
        fo_rabbit_dist[${n}]="$(free_port)"
        fo_rabbit_node[${n}]="dlchaos${n}-${fo_rabbit_port[${n}]}@localhost"
        _fo_rabbit_launch "${n}"
    done
    for n in 1 2 3; do _fo_rabbit_await "${n}"; done
    for n in 2 3; do
        fo_rabbit_ctl "${n}" -q stop_app >/dev/null
        fo_rabbit_ctl "${n}" -q join_cluster "${fo_rabbit_node[1]}" >/dev/null \
            || dl_die "failover: node ${n} could not join ${fo_rabbit_node[1]}"
        fo_rabbit_ctl "${n}" -q start_app >/dev/null
        _fo_rabbit_await "${n}"
    done
    [[ "$(fo_rabbit_ctl 1 -q cluster_status --formatter json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))')" == 3 ]] \
        || dl_die "failover: the RabbitMQ cluster did not form"
    dl_log "failover: RabbitMQ cluster ${fo_rabbit_node[1]} ${fo_rabbit_node[2]} ${fo_rabbit_node[3]}"
}

_fo_rabbit_vm_pid() {
    local f="${fo_rabbit_dir}/node-$1/node.pid"
    [[ -s "${f}" ]] && tr -dc '0-9' <"${f}"
}

fo_rabbit_kill() {
    local n="$1" down="$2" pid started i
    pid="$(_fo_rabbit_vm_pid "${n}")" || dl_die "failover: node ${n} has no pid file"
    started=${SECONDS}
    kill -KILL "${pid}" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
    done
    rm -f "${fo_rabbit_dir}/node-${n}/node.pid"
    sleep "${down}"
    _fo_rabbit_launch "${n}"
    _fo_rabbit_await "${n}"
    fo_rabbit_down_seconds=$((SECONDS - started))
}

fo_rabbit_stop() {
    local n pid
    [[ -n "${fo_rabbit_dir}" ]] || return 0
    for n in 1 2 3; do
        [[ -n "${fo_rabbit_node[${n}]:-}" ]] || continue
        pid="$(_fo_rabbit_vm_pid "${n}" || true)"
        fo_rabbit_ctl "${n}" -q stop >/dev/null 2>&1 || true
        [[ -z "${pid}" ]] || kill -KILL "${pid}" 2>/dev/null || true
    done
    fo_rabbit_dir=""
}

# --- localstripe ---------------------------------------------------------------------------------

fo_stripe_pid=""
fo_stripe_base=""
fo_stripe_key="sk_test_dropline_chaos"

fo_stripe_start() {
    local dir="$1" python="${LOCALSTRIPE_PYTHON:-${PWD}/.venv-localstripe/bin/python}" port deadline
    # Installed as scripts/test installs it (the same pinned version, the same gitignored venv).
    if [[ -z "${LOCALSTRIPE_PYTHON:-}" ]] && ! "${python}" -c 'import localstripe' 2>/dev/null; then
        dl_log "installing localstripe 1.15.10 into ${PWD}/.venv-localstripe"
        python3 -m venv "${PWD}/.venv-localstripe" || dl_die "python3 -m venv failed (apt-get install -y python3-venv)"
        "${PWD}/.venv-localstripe/bin/pip" install --quiet "localstripe==1.15.10" \
            || dl_die "pip install localstripe==1.15.10 failed"
    fi
    port="$(free_port)"
    # In memory only (localstripe would pickle its store to the one shared /tmp file).
    "${python}" -c '
import sys
import localstripe.resources as resources
resources.Store.dump_to_disk = lambda self: None
from localstripe.server import start
sys.argv = ["localstripe"] + sys.argv[1:]
start()' --port "${port}" --from-scratch >"${dir}/localstripe.log" 2>&1 &
    fo_stripe_pid=$!
    fo_stripe_base="http://127.0.0.1:${port}"
    deadline=$((SECONDS + 30))
    until curl -sf -u "${fo_stripe_key}:" "${fo_stripe_base}/v1/payment_intents" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || dl_die "failover: localstripe did not answer within 30 s"
        sleep 0.2
    done
}

fo_stripe_stop() {
    [[ -z "${fo_stripe_pid}" ]] || { kill -TERM "${fo_stripe_pid}" 2>/dev/null || true; wait "${fo_stripe_pid}" 2>/dev/null || true; }
    fo_stripe_pid=""
}
