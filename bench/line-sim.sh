#!/usr/bin/env bash
# The million-buyer run (issue #22 §1) in one command: a private Dropline, one sale, line-sim.
#
#   bench/line-sim.sh [--debug] [-- LINE_SIM_ARGS...]
#
# 1. makes sure MariaDB, Redis and RabbitMQ are up;
# 2. builds `dropline` and `line-sim` (release; --debug uses the debug builds; LINE_DROPLINE
#    names a server binary already built instead);
# 3. starts `dropline all` on free ports with its own database (LINE_DATABASE, dl_line), Redis
#    key prefix and queue prefix (LINE_PREFIX, dlline), both wiped first, and signing keys
#    written for this run (per-IP limits raised: every buyer comes from 127.0.0.1);
# 4. makes an admin, a product and a sale through the public API: STOCK units (BUYERS),
#    admit_per_second ADMIT (100), opening OPEN_IN seconds (15) from now;
# 5. runs line-sim with BUYERS buyers (1000000) and CONNECTIONS (64), PRE_OPEN (0.5),
#    ABANDON (0.1), LEAVE (0.05), SPREAD (10 s), MAX_SECONDS (0: until nobody waits), while
#    sampling every 2 s the sale's queue length (GET /w/{id}/stats) and Redis `INFO memory`;
# 6. reads Redis `INFO cpu` before and after and reports bytes per waiting buyer (the largest
#    line seen against Redis's used_memory before the run) and Redis CPU seconds per 1,000
#    status polls; then stops Dropline and deletes its database, keys and queues.
#
# Redis is the machine's shared one: memory and CPU are the whole server's, so whatever else
# runs against it (tests, CI) is counted too; on a quiet machine that is only this run.
# Output: artifacts/line-sim/ (line-sim.json: the tool's figures; redis.json: Redis's side;
# samples.tsv: the 2 s samples; dropline.log).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
# shellcheck source=scripts/lib/services.sh
source "${repo_root}/scripts/lib/services.sh"

profile=release
extra=()
while (($# > 0)); do
    case "$1" in
        --debug) profile=debug ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) dl_die "unknown option $1 (see --help)" ;;
    esac
    shift
done
database="${LINE_DATABASE:-dl_line}" prefix="${LINE_PREFIX:-dlline}"
[[ "${database}" =~ ^[A-Za-z0-9_]+$ ]] || dl_die "bad LINE_DATABASE: ${database}"
[[ "${prefix}" =~ ^[A-Za-z0-9]+$ ]] || dl_die "bad LINE_PREFIX: ${prefix}"
buyers="${BUYERS:-1000000}" stock="${STOCK:-${BUYERS:-1000000}}" admit="${ADMIT:-100}"
open_in="${OPEN_IN:-15}"

ensure_services
enable_keyspace_events
_dl_have openssl || dl_die "openssl is needed to make this run's signing keys"
_dl_have curl || dl_die "curl is needed: apt-get install -y curl"

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)
release=()
[[ "${profile}" == debug ]] || release=(--release)
target="${CARGO_TARGET_DIR:-target}/${profile}"
# LINE_DROPLINE: a dropline binary already built (skips building the server).
dropline="${LINE_DROPLINE:-${target}/dropline}"
[[ -n "${LINE_DROPLINE:-}" ]] || cargo build "${release[@]}" "${locked[@]}" -p dropline --bin dropline
cargo build "${release[@]}" "${locked[@]}" -p dropline-bench --bin line-sim

art="artifacts/line-sim"
rm -rf "${art}"
mkdir -p "${art}"

export DROPLINE_MYSQL__URL="mysql://root@127.0.0.1:3306/${database}"
export DROPLINE_REDIS__KEY_PREFIX="${prefix}"
export DROPLINE_AMQP__PREFIX="${prefix}"
export DROPLINE_WAITROOM__LISTEN="127.0.0.1:0"
export DROPLINE_API__LISTEN="127.0.0.1:0"
export DROPLINE_LOG_FORMAT="json"
export DROPLINE_LOG_FILTER="${DROPLINE_LOG_FILTER:-warn}"
export DROPLINE_WAITROOM__JOIN_PER_IP_PER_MINUTE=1000000000
export DROPLINE_WAITROOM__STATUS_PER_IP_PER_MINUTE=1000000000
export DROPLINE_LIMITS__LOGIN_PER_IP_PER_MINUTE=1000000000
openssl genpkey -algorithm ed25519 -out "${art}/access.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "${art}/pass.pem" 2>/dev/null
export DROPLINE_AUTH__SIGNING_KEY_FILE="${art}/access.pem"
export DROPLINE_PASSES__SIGNING_KEY_FILE="${art}/pass.pem"

cleanup_data() {
    dl_mysql -e "DROP DATABASE IF EXISTS \`${database}\`"
    dl_cleanup_redis_keys "${prefix}"
    dl_cleanup_rabbitmq "${prefix}"
}
dl_log "line-sim: wiping its database (${database}) and keys (${prefix})"
cleanup_data

"${dropline}" user create --email line-admin@example.com --password line-admin-password \
    --admin >/dev/null

server_pid="" sampler_pid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
stop_all() {
    local pid
    for pid in "${sampler_pid}" "${server_pid}"; do
        if [[ -n "${pid}" ]]; then
            kill -TERM "${pid}" 2>/dev/null || true
            wait "${pid}" 2>/dev/null || true
        fi
    done
    sampler_pid="" server_pid=""
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    stop_all
    cleanup_data >/dev/null 2>&1 || true
}
trap on_exit EXIT
"${dropline}" all >"${art}/dropline.log" 2>&1 &
server_pid=$!
api="" waitroom=""
deadline=$((SECONDS + 120))
while ((SECONDS < deadline)) && [[ -z "${api}" ]]; do
    kill -0 "${server_pid}" 2>/dev/null || { tail -20 "${art}/dropline.log" >&2; dl_die "dropline all exited"; }
    api="$(grep -m1 -oE 'api listening on http://[0-9.:]+' "${art}/dropline.log" | grep -oE 'http://[0-9.:]+' || true)"
    sleep 0.2
done
[[ -n "${api}" ]] || { tail -20 "${art}/dropline.log" >&2; dl_die "dropline all did not start"; }
waitroom="$(grep -m1 -oE 'waitroom listening on http://[0-9.:]+' "${art}/dropline.log" | grep -oE 'http://[0-9.:]+')"
dl_log "line-sim: api ${api}, waitroom ${waitroom}"

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
token="$(curl -sf -H 'content-type: application/json' \
    -d '{"email":"line-admin@example.com","password":"line-admin-password"}' \
    "${api}/api/auth/login" | json_field access_token)"
product="$(curl -sf -H 'content-type: application/json' -H "authorization: Bearer ${token}" \
    -d '{"name":"Limited chair","price":390000,"currency":"KRW"}' \
    "${api}/api/admin/products" | json_field id)"
opens_at="$(date -u -d "+${open_in} seconds" +%Y-%m-%dT%H:%M:%SZ)"
sale="$(curl -sf -H 'content-type: application/json' -H "authorization: Bearer ${token}" \
    -d "{\"product_id\":\"${product}\",\"stock\":${stock},\"opens_at\":\"${opens_at}\",\"per_user_limit\":1,\"hold_seconds\":600,\"admit_per_second\":${admit}}" \
    "${api}/api/admin/sales" | json_field id)"
dl_log "line-sim: sale ${sale}, stock ${stock}, opens ${opens_at}, admit_per_second ${admit}"

redis_info() { dl_redis_cli info "$1" | tr -d '\r'; }
field() { awk -F: -v k="$1" '$1 == k { print $2 }'; }
cpu_seconds() { redis_info cpu | awk -F: '$1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 } END { printf "%.3f\n", s }'; }
mem_before="$(redis_info memory | field used_memory)"
cpu_before="$(cpu_seconds)"
(
    while :; do
        q="$(curl -sf "${waitroom}/w/${sale}/stats" | json_field queue_length 2>/dev/null || echo -1)"
        printf '%s\t%s\t%s\n' "$(date +%s)" "${q}" "$(redis_info memory | field used_memory)"
        sleep 2
    done
) >"${art}/samples.tsv" 2>/dev/null &
sampler_pid=$!

set +e
"${target}/line-sim" --waitroom "${waitroom}" --sale "${sale}" \
    --signing-key "${art}/access.pem" --buyers "${buyers}" --admit-per-second "${admit}" \
    --connections "${CONNECTIONS:-64}" --pre-open "${PRE_OPEN:-0.5}" --abandon "${ABANDON:-0.1}" \
    --leave "${LEAVE:-0.05}" --spread-seconds "${SPREAD:-10}" --max-seconds "${MAX_SECONDS:-0}" \
    --out "${art}/line-sim.json" "${extra[@]}" 2>&1 | tee "${art}/line-sim.txt"
rc="${PIPESTATUS[0]}"
set -e
cpu_after="$(cpu_seconds)"
stop_all
python3 - "${art}" "${mem_before}" "${cpu_before}" "${cpu_after}" <<'PY'
import json, sys
art, mem_before, cpu_before, cpu_after = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sim = json.load(open(f"{art}/line-sim.json"))
samples = []
for line in open(f"{art}/samples.tsv"):
    parts = line.split()
    if len(parts) == 3 and parts[1].lstrip("-").isdigit() and parts[2].isdigit():
        samples.append((int(parts[0]), int(parts[1]), int(parts[2])))
peak = max(samples, key=lambda s: s[1], default=None)
per_buyer = None
if peak and peak[1] > 0:
    per_buyer = (peak[2] - mem_before) / peak[1]
polls = sim.get("polls_total", 0)
cpu = cpu_after - cpu_before
out = {
    "used_memory_before": mem_before,
    "peak_queue_length": peak[1] if peak else None,
    "used_memory_at_peak": peak[2] if peak else None,
    "bytes_per_waiting_buyer": per_buyer,
    "redis_cpu_seconds": cpu,
    "status_polls": polls,
    "redis_cpu_seconds_per_1000_polls": cpu / polls * 1000 if polls else None,
    "note": "the machine's shared Redis: memory and CPU include whatever else ran against it",
}
json.dump(out, open(f"{art}/redis.json", "w"), indent=2)
fmt = lambda v, f: "-" if v is None else format(v, f)
print(f"[dropline] line-sim: Redis: peak line {out['peak_queue_length']}, "
      f"{fmt(per_buyer, '.0f')} B per waiting buyer, {cpu:.2f} CPU s over {polls} polls "
      f"({fmt(out['redis_cpu_seconds_per_1000_polls'], '.3f')} s per 1,000)")
PY
dl_log "line-sim: output in ${art}/ (line-sim exit ${rc})"
exit "${rc}"
