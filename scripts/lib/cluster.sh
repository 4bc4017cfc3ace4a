# A private Redis Cluster on loopback for scripts that need one (scripts/cluster-test,
# bench/line-sim.sh with LINE_CLUSTER): N primaries, no replicas, keyspace events on, no
# persistence, made fresh under a temporary directory and removed by dl_cluster_stop.
#
#   source scripts/lib/services.sh; source scripts/lib/cluster.sh
#   dl_cluster_start BASE_PORT [PRIMARIES]   ports BASE..BASE+N-1 (bus ports +10000)
#   dl_cluster_stop                          shuts every node down, deletes the directory
#
# After dl_cluster_start: DL_CLUSTER_PORTS (the ports, in order), DL_CLUSTER_URL (the
# redis+cluster:// URL Dropline reads), DL_CLUSTER_DIR (nodes' files and logs).
# The shared Redis is never touched: a taken port is an error, not a reuse.

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "[dropline] scripts/lib/cluster.sh is a library: source it, do not run it" >&2
    exit 2
fi

DL_CLUSTER_PORTS=()
DL_CLUSTER_URL=""
DL_CLUSTER_DIR=""

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
        mkdir -p "${DL_CLUSTER_DIR}/${port}"
        redis-server --port "${port}" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "${DL_CLUSTER_DIR}/${port}/nodes.conf" --cluster-node-timeout 5000 \
            --save "" --appendonly no --dir "${DL_CLUSTER_DIR}/${port}" --daemonize yes \
            --logfile "${DL_CLUSTER_DIR}/${port}/redis.log" --notify-keyspace-events Ex \
            || dl_die "redis-server on ${port} failed to start"
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
