# Private Redis servers on loopback for scripts that need one (scripts/cluster-test,
# bench/line-sim.sh with LINE_CLUSTER or LINE_REDIS_CPU): keyspace events on, no persistence,
# made fresh under a temporary directory and removed by their stop function.
#
#   source scripts/lib/services.sh; source scripts/lib/cluster.sh
#   dl_cluster_start BASE_PORT [PRIMARIES]   a cluster: ports BASE..BASE+N-1 (bus ports +10000),
#                                            N primaries, no replicas
#   dl_cluster_stop                          shuts every node down, deletes the directory
#   dl_redis_capped_start PORT CORES         one Redis held to CORES of CPU time (0.05 to 64;
#                                            a CPU cgroup's quota: the line's Redis core made
#                                            the binding resource on purpose)
#   dl_redis_capped_stop                     shuts it down, removes its cgroup and directory
#
# After dl_cluster_start: DL_CLUSTER_PORTS (the ports, in order), DL_CLUSTER_URL (the
# redis+cluster:// URL Dropline reads), DL_CLUSTER_DIR (nodes' files and logs). After
# dl_redis_capped_start: DL_CAPPED_URL, DL_CAPPED_PORT, DL_CAPPED_DIR.
# The shared Redis is never touched: a taken port is an error, not a reuse.

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "[dropline] scripts/lib/cluster.sh is a library: source it, do not run it" >&2
    exit 2
fi

DL_CLUSTER_PORTS=()
DL_CLUSTER_URL=""
DL_CLUSTER_DIR=""
DL_CAPPED_PORT=""
DL_CAPPED_URL=""
DL_CAPPED_DIR=""
DL_CAPPED_CGROUP=""

# _dl_private_redis PORT DIR [ARGS...]: a daemonized redis-server on 127.0.0.1:PORT with its
# files, log and pid file in DIR (made here), keyspace expiry events on, no persistence.
_dl_private_redis() {
    local port="$1" dir="$2"
    shift 2
    mkdir -p "${dir}"
    redis-server --port "${port}" --bind 127.0.0.1 --save "" --appendonly no --dir "${dir}" \
        --daemonize yes --pidfile "${dir}/redis.pid" --logfile "${dir}/redis.log" \
        --notify-keyspace-events Ex "$@" \
        || dl_die "redis-server on ${port} failed to start"
}

# shellcheck disable=SC2317 # called through _dl_wait
_dl_cluster_pong() { [[ "$(redis-cli -p "$1" ping 2>/dev/null)" == "PONG" ]]; }

dl_cluster_start() {
    local base="$1" count="${2:-3}" port deadline
    _dl_have redis-server || dl_die "redis-server is needed (apt-get install -y redis-server)"
    _dl_have redis-cli || dl_die "redis-cli is needed (apt-get install -y redis-tools)"
    [[ "${base}" =~ ^[0-9]+$ && "${count}" =~ ^[0-9]+$ ]] || dl_die "bad cluster ports: ${base} x ${count}"
    ((count >= 3)) || dl_die "a Redis Cluster needs at least 3 primaries (asked for ${count})"
    local ports=()
    for ((port = base; port < base + count; port++)); do
        # Checked before any port is ours: dl_cluster_stop shuts down what DL_CLUSTER_PORTS
        # names, and a taken port is somebody else's server.
        if _dl_tcp_open 127.0.0.1 "${port}"; then
            dl_die "port ${port} is taken; choose other cluster ports"
        fi
        # A node also listens on its cluster bus, port + 10000; a taken bus port would fail
        # that node after its neighbours started.
        if _dl_tcp_open 127.0.0.1 "$((port + 10000))"; then
            dl_die "port $((port + 10000)) (the cluster bus of ${port}) is taken; choose other cluster ports"
        fi
        ports+=("${port}")
    done
    DL_CLUSTER_PORTS=("${ports[@]}")
    DL_CLUSTER_DIR="$(mktemp -d /tmp/dropline-cluster.XXXXXX)"
    for port in "${DL_CLUSTER_PORTS[@]}"; do
        _dl_private_redis "${port}" "${DL_CLUSTER_DIR}/${port}" --cluster-enabled yes \
            --cluster-config-file "${DL_CLUSTER_DIR}/${port}/nodes.conf" --cluster-node-timeout 5000
    done
    for port in "${DL_CLUSTER_PORTS[@]}"; do
        _dl_wait "redis ${port}" 10 0.1 "see ${DL_CLUSTER_DIR}/${port}/redis.log" _dl_cluster_pong "${port}"
    done
    local nodes=()
    for port in "${DL_CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:${port}"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
        >"${DL_CLUSTER_DIR}/create.log" 2>&1 \
        || { cat "${DL_CLUSTER_DIR}/create.log" >&2; dl_die "redis-cli --cluster create failed"; }
    deadline=$((SECONDS + 30))
    until redis-cli -p "${base}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
        ((SECONDS < deadline)) || dl_die "the cluster did not reach cluster_state:ok"
        sleep 0.2
    done
    DL_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"
    dl_log "redis cluster up: ${nodes[*]}"
}

# shellcheck disable=SC2317 # usually invoked by an EXIT trap
dl_cluster_stop() {
    local port
    for port in "${DL_CLUSTER_PORTS[@]}"; do
        redis-cli -p "${port}" shutdown nosave >/dev/null 2>&1 || true
    done
    [[ -z "${DL_CLUSTER_DIR}" ]] || rm -rf "${DL_CLUSTER_DIR}"
    DL_CLUSTER_PORTS=()
    DL_CLUSTER_DIR=""
}

# dl_redis_capped_start PORT CORES: one private Redis on PORT whose process may use CORES of
# CPU time (a CFS quota: cgroup v2's cpu.max, or v1's cpu controller), so that a run can make
# the line's Redis the resource that binds without a slower machine. Root only (cgroups).
dl_redis_capped_start() {
    local port="$1" cores="$2" period quota pid base
    _dl_have redis-server || dl_die "redis-server is needed (apt-get install -y redis-server)"
    [[ "${port}" =~ ^[0-9]+$ ]] || dl_die "bad port for the capped Redis: ${port}"
    if ! [[ "${cores}" =~ ^[0-9]+([.][0-9]+)?$ ]] \
        || ! awk -v c="${cores}" 'BEGIN { exit !(c >= 0.05 && c <= 64) }'; then
        dl_die "the capped Redis takes 0.05 to 64 cores, not ${cores}"
    fi
    ((EUID == 0)) || dl_die "capping Redis's CPU needs a cgroup, so root"
    if _dl_tcp_open 127.0.0.1 "${port}"; then
        dl_die "port ${port} is taken; choose another port for the capped Redis"
    fi
    # The kernel's period is 1 ms to 1 s and its quota at least 1 ms: 10 ms periods (Redis
    # runs at most quota of each, then waits for the next), longer ones below 0.1 core.
    period=$(awk -v c="${cores}" 'BEGIN { p = 10000; if (c * p < 1000) p = int(1000 / c + 0.5); print p }')
    quota=$(awk -v c="${cores}" -v p="${period}" 'BEGIN { print int(c * p + 0.5) }')
    DL_CAPPED_DIR="$(mktemp -d /tmp/dropline-capped.XXXXXX)"
    DL_CAPPED_PORT="${port}"
    _dl_private_redis "${port}" "${DL_CAPPED_DIR}"
    _dl_wait "redis ${port}" 10 0.1 "see ${DL_CAPPED_DIR}/redis.log" _dl_cluster_pong "${port}"
    pid="$(cat "${DL_CAPPED_DIR}/redis.pid")"
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        base=/sys/fs/cgroup
        grep -qw cpu "${base}/cgroup.subtree_control" 2>/dev/null \
            || echo +cpu >"${base}/cgroup.subtree_control" \
            || dl_die "cgroup v2 without the cpu controller for children: cannot cap Redis"
        DL_CAPPED_CGROUP="${base}/dropline-redis-${port}"
        mkdir "${DL_CAPPED_CGROUP}" || dl_die "cannot make ${DL_CAPPED_CGROUP}"
        echo "${quota} ${period}" >"${DL_CAPPED_CGROUP}/cpu.max"
    elif [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
        DL_CAPPED_CGROUP="/sys/fs/cgroup/cpu/dropline-redis-${port}"
        mkdir "${DL_CAPPED_CGROUP}" || dl_die "cannot make ${DL_CAPPED_CGROUP}"
        echo "${period}" >"${DL_CAPPED_CGROUP}/cpu.cfs_period_us"
        echo "${quota}" >"${DL_CAPPED_CGROUP}/cpu.cfs_quota_us"
    else
        dl_die "no CPU cgroup controller (neither cgroup v2's cpu.max nor v1's cpu) to cap Redis"
    fi
    # Every thread of the process (Redis's I/O and background threads too).
    echo "${pid}" >"${DL_CAPPED_CGROUP}/cgroup.procs" || dl_die "cannot move Redis ${pid} into ${DL_CAPPED_CGROUP}"
    DL_CAPPED_URL="redis://127.0.0.1:${port}"
    dl_log "capped redis up: 127.0.0.1:${port}, ${quota} us of CPU every ${period} us (${cores} cores), ${DL_CAPPED_CGROUP}"
}

# shellcheck disable=SC2317 # usually invoked by an EXIT trap
dl_redis_capped_stop() {
    local i
    if [[ -n "${DL_CAPPED_PORT}" ]]; then
        redis-cli -p "${DL_CAPPED_PORT}" shutdown nosave >/dev/null 2>&1 || true
    fi
    if [[ -n "${DL_CAPPED_CGROUP}" && -d "${DL_CAPPED_CGROUP}" ]]; then
        # A cgroup is removed once its last process has exited.
        for ((i = 0; i < 50; i++)); do
            rmdir "${DL_CAPPED_CGROUP}" 2>/dev/null && break
            sleep 0.1
        done
    fi
    [[ -z "${DL_CAPPED_DIR}" ]] || rm -rf "${DL_CAPPED_DIR}"
    DL_CAPPED_PORT=""
    DL_CAPPED_URL=""
    DL_CAPPED_DIR=""
    DL_CAPPED_CGROUP=""
}
