#!/usr/bin/env bash
# The million-buyer run (issue #22 §1) in one command: a private Dropline, one sale, line-sim.
#
#   bench/line-sim.sh [--debug] [-- LINE_SIM_ARGS...]
#   LINE_CLUSTER=1 LINE_SHARDS=3 bench/line-sim.sh ...   the same on a private Redis Cluster
#   LINE_REDIS_CPU=0.1 bench/line-sim.sh ...             on a private Redis held to 0.1 core
#   LINE_REDIS_CPU=1 LINE_REDIS_FILL=6 bench/line-sim.sh ...   on a private Redis kept full
#
# 1. makes sure MariaDB, Redis and RabbitMQ are up;
# 2. builds `dropline` and `line-sim` (release; --debug uses the debug builds; LINE_DROPLINE
#    names a server binary already built instead, LINE_SIM a line-sim binary);
# 3. starts the line's side of compose/local's topology as local processes
#    (compose/lib/topology.sh): LINE_REPLICAS (2) `dropline waitroom` and as many `dropline api`
#    behind nginx (no workers: nobody orders), with its own database (LINE_DATABASE, dl_line),
#    Redis key prefix and queue prefix (LINE_PREFIX, dlline), both wiped first, and keys made
#    for this run (per-IP limits raised: every buyer comes from 127.0.0.1);
# 4. makes an admin, a product and a sale through the public API: STOCK units (BUYERS),
#    admit_per_second ADMIT (100), opening OPEN_IN seconds (15) from now;
# 5. runs line-sim with BUYERS buyers (1000000) and CONNECTIONS (64), PRE_OPEN (0.5),
#    ABANDON (0.1), LEAVE (0.05), SPREAD (10 s), MAX_SECONDS (0: until nobody waits), while
#    sampling every 2 s the sale's queue length (GET /w/{id}/stats), Redis `INFO memory`, and
#    the sale's admitted_total with Redis's clock (read in one script call);
# 6. reads Redis `INFO cpu` before and after and reports bytes per waiting buyer (the largest
#    line seen against Redis's used_memory before the run), Redis CPU seconds per 1,000
#    status polls, the server's admissions in the busiest 10 s and in the slowest 10 s of the
#    open sale while R x 10 buyers are in line (from 2 s after the opening to the first sample
#    with fewer) against R x 10 and their rate over that span against R,
#    and the leader's tick and reaper times;
#    then stops Dropline and deletes its database, keys and queues.
#
# Redis is the machine's shared one: memory and CPU are the whole server's, so whatever else
# runs against it (tests, CI) is counted too; on a quiet machine that is only this run.
#
# LINE_CLUSTER=1 (issue #22 §2's per-shard figures): Redis is instead a private 3-primary
# cluster (scripts/lib/cluster.sh, ports LINE_CLUSTER_BASE_PORT (17401)..+2), made for the run
# and removed after it, and the sale's line is spread over LINE_SHARDS line shards (the admin
# API's `line_shards`; 1, the default, keeps the whole sale on its own slot). Memory is summed
# over the primaries and CPU is reported per primary: redis.json's `primaries` (each one's CPU
# seconds, per 1,000 polls, and whether it holds the sale's own slot) and the busiest one's
# CPU per 1,000 polls, the figure that has to fall as the line spreads.
#
# LINE_REDIS_CPU=C (what happens when the line's Redis core binds): Redis is instead one private
# server (port LINE_REDIS_PORT, 17411) whose CPU time a cgroup quota holds to C cores (0.05 to
# 64; scripts/lib/cluster.sh, dl_redis_capped_start; root), made for the run and removed after
# it. Every figure is then that server's alone.
#
# LINE_REDIS_FILL=T (with LINE_REDIS_CPU; a core that is full rather than slow): bench/redis-fill.py
# keeps that server busy for the whole run with T connections of Lua calls of LINE_REDIS_FILL_US
# (150) µs of Redis time each, one in flight on each, so the run's calls queue behind them at
# Redis's own speed (a quota instead stops Redis for most of each period and makes every call
# slower). Redis's CPU figures then include the filler's; fill.txt has its calls and how busy the
# core was every 10 s.
#
# Both ways, redis.json also has the waitrooms' mean polls (and joins) a script call, from their
# /metrics batch-size histograms before and after the run: how full the calls ran.
# Output: artifacts/line-sim/ (line-sim.json: the tool's figures; redis.json: Redis's side;
# samples.tsv: the 2 s samples; keys.tsv: memory by key; commandstats-{before,after}*.txt: Redis's
# INFO commandstats around the run, and commandstats-run.tsv the run's own share of it (each
# command's calls and time a status poll, scripts' inner commands included: where Redis's CPU
# went); topo/: every process's log, nginx's config and logs).
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
        # The header comment, however long it grows.
        -h | --help) dl_help "$0"; exit 0 ;;
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
cluster="${LINE_CLUSTER:-0}" shards="${LINE_SHARDS:-1}" capped="${LINE_REDIS_CPU:-}"
fill="${LINE_REDIS_FILL:-0}" fill_us="${LINE_REDIS_FILL_US:-150}"
[[ "${fill}" =~ ^[0-9]+$ && "${fill_us}" =~ ^[1-9][0-9]*$ ]] \
    || dl_die "LINE_REDIS_FILL and LINE_REDIS_FILL_US are whole numbers, not ${fill} and ${fill_us}"
if ((fill > 0)) && [[ -z "${capped}" ]]; then
    dl_die "LINE_REDIS_FILL fills a private Redis: it needs LINE_REDIS_CPU (1 for an uncapped core)"
fi
[[ "${cluster}" =~ ^[01]$ ]] || dl_die "LINE_CLUSTER is 0 or 1, not ${cluster}"
[[ "${shards}" =~ ^[0-9]+$ ]] && ((shards >= 1 && shards <= 64)) \
    || dl_die "LINE_SHARDS is 1 to 64 (the admin API's line_shards), not ${shards}"
if [[ "${cluster}" == 0 && "${shards}" != 1 ]]; then
    dl_die "LINE_SHARDS=${shards} needs LINE_CLUSTER=1 (on one Redis every shard is the same core)"
fi
if [[ -n "${capped}" && "${cluster}" == 1 ]]; then
    dl_die "LINE_REDIS_CPU caps one private Redis; it does not go with LINE_CLUSTER=1"
fi

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
# LINE_SIM: a line-sim binary already built (skips building the tool).
line_sim="${LINE_SIM:-${target}/line-sim}"
[[ -n "${LINE_SIM:-}" ]] || cargo build "${release[@]}" "${locked[@]}" -p dropline-bench --bin line-sim

art="artifacts/line-sim"
rm -rf "${art}"
mkdir -p "${art}"

cleanup_data() {
    dl_mysql -e "DROP DATABASE IF EXISTS \`${database}\`"
    # A private cluster or capped Redis goes with its keys (dl_cluster_stop, dl_redis_capped_stop).
    [[ "${cluster}" == 1 || -n "${capped}" ]] || dl_cleanup_redis_keys "${prefix}"
    dl_cleanup_rabbitmq "${prefix}"
}
sampler_pid="" fill_pid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
stop_fill() {
    if [[ -n "${fill_pid}" ]]; then
        kill -TERM "${fill_pid}" 2>/dev/null || true
        wait "${fill_pid}" 2>/dev/null || true
        fill_pid=""
    fi
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
stop_processes() {
    stop_fill
    if [[ -n "${sampler_pid}" ]]; then
        kill -TERM "${sampler_pid}" 2>/dev/null || true
        wait "${sampler_pid}" 2>/dev/null || true
        sampler_pid=""
    fi
    # The topology's processes (compose/lib/topology.sh).
    if declare -F stop_all >/dev/null; then stop_all; fi
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
on_exit() {
    stop_processes
    cleanup_data >/dev/null 2>&1 || true
    if [[ "${cluster}" == 1 ]]; then dl_cluster_stop; fi
    if [[ -n "${capped}" ]]; then dl_redis_capped_stop; fi
}
trap on_exit EXIT
# shellcheck source=compose/lib/topology.sh
source "${repo_root}/compose/lib/topology.sh"
# shellcheck source=scripts/lib/cluster.sh
source "${repo_root}/scripts/lib/cluster.sh"
TOPO_TAG=line
TOPO_RUN="${repo_root}/${art}/topo"
TOPO_DB="${database}"
TOPO_PREFIX="${prefix}"
TOPO_REPLICAS="${LINE_REPLICAS:-2}"
# The line alone: nobody orders, so no workers (the admitter runs in the waitrooms).
topo_kinds=()
topo_prepare
bin="$(cd "$(dirname "${dropline}")" && pwd)/$(basename "${dropline}")"
topo_init_run
topo_export_env --lift-ip-limits
export DROPLINE_LOG_FILTER="${LINE_LOG_FILTER:-warn}"
topo_wipe
if [[ "${cluster}" == 1 ]]; then
    # After topo_wipe, which cleans the shared Redis: from here on every process (and every
    # redis_* helper below) talks to the private cluster.
    dl_cluster_start "${LINE_CLUSTER_BASE_PORT:-17401}" 3
    export DROPLINE_REDIS__URL="${DL_CLUSTER_URL}"
elif [[ -n "${capped}" ]]; then
    # Likewise: every process talks to the private, capped Redis from here on.
    dl_redis_capped_start "${LINE_REDIS_PORT:-17411}" "${capped}"
    export DROPLINE_REDIS__URL="${DL_CAPPED_URL}"
fi
topo_migrate_and_users
topo_start_replicas
topo_start_nginx
opens_at="$(date -u -d "+${open_in} seconds" +%Y-%m-%dT%H:%M:%SZ)"
sale_extra='"hold_seconds":600'
[[ "${shards}" == 1 ]] || sale_extra+=",\"line_shards\":${shards}"
topo_make_sale "${stock}" "${opens_at}" "${admit}" "${sale_extra}"
waitroom="${base}"
signing_key="${keydir}/access.pem"
dl_log "line-sim: sale ${sale}, stock ${stock}, opens ${opens_at}, admit_per_second ${admit}, line_shards ${shards}, waitroom ${waitroom}"

# The Redis servers of the run: the shared one, each primary of the private cluster, or the
# capped one.
redis_ports=()
[[ "${cluster}" == 0 ]] || redis_ports=("${DL_CLUSTER_PORTS[@]}")
[[ -z "${capped}" ]] || redis_ports=("${DL_CAPPED_PORT}")
# redis_on PORT ARGS...: redis-cli ARGS on the run's server at PORT (empty: the shared Redis).
redis_on() {
    local port="$1"
    shift
    if [[ -z "${port}" ]]; then dl_redis_cli "$@"; else redis-cli -p "${port}" "$@"; fi
}
# The run's servers ("" for the shared Redis), and redis_each ARGS...: redis-cli ARGS on each.
run_ports=("${redis_ports[@]}")
((${#run_ports[@]} > 0)) || run_ports=("")
redis_each() {
    local port
    for port in "${run_ports[@]}"; do redis_on "${port}" "$@"; done
}
field() { awk -F: -v k="$1" '$1 == k { print $2 }'; }
# used_memory summed over the run's servers.
used_memory() { redis_each info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { s += $2 } END { printf "%d\n", s }'; }
# CPU seconds (user + system) of each server of the run, one number a line, in redis_ports order.
cpu_seconds() {
    redis_each info cpu | tr -d '\r' \
        | awk -F: '$1 == "used_cpu_sys" { s = $2 } $1 == "used_cpu_user" { printf "%.3f\n", s + $2 }'
}
# The port of the primary holding the sale's own slot (keys tagged {s:<sale>}); empty on one Redis.
sale_port=""
if [[ "${cluster}" == 1 ]]; then
    sale_slot="$(redis-cli -p "${redis_ports[0]}" cluster keyslot "{s:${sale}}" | tr -d '\r')"
    # CLUSTER NODES: "<id> <ip>:<port>@<bus> <flags> <master> ... <connected> <from>-<to> ...".
    sale_port="$(redis-cli -p "${redis_ports[0]}" cluster nodes | tr -d '\r' | awk -v slot="${sale_slot}" '
        $3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]
            if (slot + 0 >= r[1] + 0 && slot + 0 <= r[2] + 0) { split($2, a, "[:@]"); print a[2]; exit } } }')"
fi
# CPU seconds (user + system) of the processes started as NAME... (waitroom-1, nginx, ...).
proc_cpu() {
    local name pid total=0 ticks
    ticks="$(getconf CLK_TCK)"
    for name in "$@"; do
        pid="$(pid_of "${name}")" || continue
        # The process and its children (nginx's worker). Fields 14 and 15 of /proc/PID/stat,
        # counted after the parenthesised command name.
        for pid in "${pid}" $(pgrep -P "${pid}" || true); do
            total=$((total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/${pid}/stat" 2>/dev/null || echo 0)))
        done
    done
    awk -v t="${total}" -v k="${ticks}" 'BEGIN { printf "%.2f\n", t / k }'
}
waitrooms=()
for ((n = 1; n <= TOPO_REPLICAS; n++)); do waitrooms+=("waitroom-${n}"); done
# The waitrooms' batch-size histograms (sum and count of asks a script call, status polls and
# joins, summed over the replicas) as "status_sum status_count join_sum join_count".
# Also keeps the waitrooms' /metrics in metrics-WHEN.txt (WHEN: before or after), for the
# leader's tick and reap histograms.
batch_sizes() {
    local name
    for name in "${waitrooms[@]}"; do
        curl -sf "${addr[${name}]}/metrics" || true
    done | tee "${art}/metrics-$1.txt" | awk '
        $1 ~ /^dropline_waitroom_status_batch_size_sum/ { ss += $2 }
        $1 ~ /^dropline_waitroom_status_batch_size_count/ { sc += $2 }
        $1 ~ /^dropline_waitroom_join_batch_size_sum/ { js += $2 }
        $1 ~ /^dropline_waitroom_join_batch_size_count/ { jc += $2 }
        END { printf "%d %d %d %d\n", ss, sc, js, jc }'
}
# INFO commandstats of every server of the run into commandstats-WHEN[.port].txt.
commandstats() {
    local port
    for port in "${run_ports[@]}"; do
        redis_on "${port}" info commandstats >"${art}/commandstats-$1${port:+.${port}}.txt" 2>/dev/null || true
    done
}
if ((fill > 0)); then
    python3 -u bench/redis-fill.py --port "${DL_CAPPED_PORT}" --threads "${fill}" \
        --call-us "${fill_us}" >"${art}/fill.txt" 2>&1 &
    fill_pid=$!
    # It sizes its calls first (a second); the run starts once they run.
    for _ in $(seq 1 600); do
        grep -q connections "${art}/fill.txt" && break
        kill -0 "${fill_pid}" 2>/dev/null || { cat "${art}/fill.txt" >&2; dl_die "redis-fill did not start"; }
        sleep 0.1
    done
    dl_log "$(head -1 "${art}/fill.txt")"
fi
commandstats before
mem_before="$(used_memory)"
cpu_before="$(cpu_seconds | paste -sd,)"
waitroom_cpu_before="$(proc_cpu "${waitrooms[@]}")"
nginx_cpu_before="$(proc_cpu nginx)"
batches_before="$(batch_sizes before)"
# admitted_total read in Redis with Redis's clock: the rate credit runs on that clock, so the
# span between two readings is the span #22's bound speaks of, whatever each reading's latency
# (a /stats round trip under load varies by tens of ms, a per cent of a 10 s span's admissions).
wr_key="${prefix}:{s:${sale}}:wr"
admitted_at() {
    local script="local t = redis.call('TIME') return {t[1], t[2], redis.call('HGET', KEYS[1], 'admitted_total') or '0'}"
    redis_on "${sale_port:-${run_ports[0]}}" eval "${script}" 1 "${wr_key}" | tr -d '\r' | paste -sd' ' | awk 'NF == 3 { printf "%d\t%d\n", $1 * 1000 + int($2 / 1000), $3; ok = 1 } END { if (!ok) print "-1\t-1" }'
}
(
    while :; do
        # queue_length (GET /w/{id}/stats: on a spread line it is summed over the shards).
        queue="$(curl -sf "${waitroom}/w/${sale}/stats" | json_field queue_length 2>/dev/null || echo -1)"
        # admitted_total (the server's count, silent buyers' admissions too), at Redis's time.
        printf '%s\t%s\t%s\t%s\n' "$(date +%s%3N)" "${queue}" "$(used_memory)" "$(admitted_at)"
        sleep 2
    done
) >"${art}/samples.tsv" 2>/dev/null &
sampler_pid=$!

set +e
"${line_sim}" --waitroom "${waitroom}" --sale "${sale}" \
    --signing-key "${signing_key}" --buyers "${buyers}" --admit-per-second "${admit}" \
    --connections "${CONNECTIONS:-64}" --pre-open "${PRE_OPEN:-0.5}" --abandon "${ABANDON:-0.1}" \
    --leave "${LEAVE:-0.05}" --spread-seconds "${SPREAD:-10}" --max-seconds "${MAX_SECONDS:-0}" \
    --out "${art}/line-sim.json" "${extra[@]}" 2>&1 | tee "${art}/line-sim.txt"
rc="${PIPESTATUS[0]}"
set -e
stop_fill
cpu_after="$(cpu_seconds | paste -sd,)"
# Which commands the CPU went to: the difference is this run's (on the shared Redis, whatever
# else ran against it meanwhile too).
commandstats after
# Where the memory is, while the line is still long (at --max-seconds it is): every key of the
# run's prefix with MEMORY USAGE, summed by its name with ids folded (keys.tsv).
# On a cluster each primary is asked about the keys it holds.
: >"${art}/keys.txt"
: >"${art}/usage.txt"
for port in "${run_ports[@]}"; do
    redis_on "${port}" --scan --pattern "${prefix}:*" >"${art}/keys.${port:-shared}.txt" || true
    cat "${art}/keys.${port:-shared}.txt" >>"${art}/keys.txt"
    sed 's/^/MEMORY USAGE "/; s/$/" SAMPLES 0/' "${art}/keys.${port:-shared}.txt" \
        | redis_on "${port}" >>"${art}/usage.txt" 2>/dev/null || true
done
queue_at_end="$(curl -sf "${waitroom}/w/${sale}/stats" | json_field queue_length 2>/dev/null || echo -1)"
python3 - "${art}" "${queue_at_end}" <<'PY' || true
import collections, re, sys
art, line = sys.argv[1], int(sys.argv[2])
keys = open(f"{art}/keys.txt", encoding="utf-8", errors="replace").read().splitlines()
usage = open(f"{art}/usage.txt").read().split()
groups = collections.defaultdict(lambda: [0, 0])
for key, used in zip(keys, usage):
    name = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", key)
    name = re.sub(r"\{id\}:.*$", "{id}:…", name, count=0) if name.count("{id}") > 1 else name
    groups[name][0] += 1
    groups[name][1] += int(used) if used.isdigit() else 0
total = sum(b for _, b in groups.values())
with open(f"{art}/keys.tsv", "w") as out:
    out.write(f"# queue_length {line}; {len(keys)} keys, {total} bytes by MEMORY USAGE\n")
    for name, (n, b) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        per = f"{b / line:.1f}" if line > 0 else "-"
        out.write(f"{name}\t{n} keys\t{b} B\t{per} B per waiting buyer\n")
print(open(f"{art}/keys.tsv").read(), end="")
PY
waitroom_cpu="$(awk -v a="$(proc_cpu "${waitrooms[@]}")" -v b="${waitroom_cpu_before}" 'BEGIN { print a - b }')"
nginx_cpu="$(awk -v a="$(proc_cpu nginx)" -v b="${nginx_cpu_before}" 'BEGIN { print a - b }')"
batches_after="$(batch_sizes after)"
stop_processes
python3 - "${art}" "${mem_before}" "${cpu_before}" "${cpu_after}" "${admit}" "${waitroom_cpu}" "${nginx_cpu}" \
    "$(IFS=,; echo "${redis_ports[*]}")" "${sale_port}" "${shards}" "${capped}" \
    "${batches_before}" "${batches_after}" "${fill}" "$(date -u -d "${opens_at}" +%s%3N)" <<'PY'
import json, sys
art, mem_before = sys.argv[1], int(sys.argv[2])
# Each server's CPU seconds before and after, in the same order as the ports.
cpu_before = [float(v) for v in sys.argv[3].split(",") if v]
cpu_after = [float(v) for v in sys.argv[4].split(",") if v]
rate, waitroom_cpu, nginx_cpu = float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
ports, sale_port, shards = [p for p in sys.argv[8].split(",") if p], sys.argv[9], int(sys.argv[10])
capped = float(sys.argv[11]) if sys.argv[11] else None
# Asks a script call in the waitrooms (their batch-size histograms): the run's sums and counts.
b0, b1 = [int(v) for v in sys.argv[12].split()], [int(v) for v in sys.argv[13].split()]
run_batches = [a - b for a, b in zip(b1, b0)]
mean = lambda s, c: s / c if c > 0 else None
polls_a_call, joins_a_call = mean(run_batches[0], run_batches[1]), mean(run_batches[2], run_batches[3])


# The leader's rounds in the run (only a leader records them): how many, their mean, and how
# many took over 0.1 s (a tick's length: the next round was late), from the histograms' deltas.
# A reaper round is a step of a pass (a call for each sale, after a tick).
def histogram(when, name):
    count, total, buckets = 0.0, 0.0, {}
    try:
        lines = open(f"{art}/metrics-{when}.txt").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].startswith(name):
            continue
        key, value = parts[0][len(name):], float(parts[1])
        if key.startswith("_count"):
            count += value
        elif key.startswith("_sum"):
            total += value
        elif key.startswith('_bucket{le="'):
            le = key[len('_bucket{le="'):].split('"')[0]
            buckets[le] = buckets.get(le, 0.0) + value
    return count, total, buckets.get("0.1")


def rounds(name):
    (c1, s1, w1), (c0, s0, w0) = histogram("after", name), histogram("before", name)
    count = c1 - c0
    return {"rounds": int(count), "mean_seconds": round((s1 - s0) / count, 4) if count else None,
            "over_100ms": int(count - (w1 - (w0 or 0))) if w1 is not None else None}


admit_rounds = rounds("dropline_waitroom_admit_tick_seconds")
reaper_rounds = rounds("dropline_waitroom_reap_round_seconds")
sim = json.load(open(f"{art}/line-sim.json"))
samples = []  # (ms, queue_length, used_memory, Redis's ms, admitted_total)
for line in open(f"{art}/samples.tsv"):
    parts = line.split()
    if len(parts) == 5 and all(p.lstrip("-").isdigit() for p in parts) and int(parts[1]) >= 0:
        samples.append(tuple(int(p) for p in parts))
peak = max(samples, key=lambda s: s[1], default=None)
# The server's admissions (admitted_total with Redis's clock, read every 2 s) over every span
# of at least 10 s, scaled to 10 s, against R x 10 (#22: within 1 % + a tick + 1): the most in
# any span, and the least in the sale's span: from 2 s after the opening (span_from) while at
# least R x 10 buyers are still in line (line_full), so there was someone to admit throughout.
opens_ms = int(sys.argv[15])
span_from, line_full = opens_ms + 2_000, rate * 10
counted = [s for s in samples if s[3] >= 0]
# The sale's span: the samples from span_from on while the line holds R x 10, up to the first
# that finds it shorter (a line that dips and fills again, as joins after the opening can make
# it, is not counted past the dip).
full = []
for s in counted:
    if s[3] < span_from:
        continue
    if s[1] < line_full:
        if full:
            break
        continue
    full.append(s)
most_10s = least_10s = None
for i, (_, _, _, t0, a0) in enumerate(counted):
    for _, _, _, t1, a1 in counted[i + 1:]:
        if t1 - t0 >= 10_000:
            per_10s = (a1 - a0) * 10_000 / (t1 - t0)
            most_10s = per_10s if most_10s is None else max(most_10s, per_10s)
            if full and full[0][3] <= t0 and t1 <= full[-1][3]:
                least_10s = per_10s if least_10s is None else min(least_10s, per_10s)
            break
# Over the whole of the sale's span: its first sample to its last one.
over_sale = None
if rate and full and full[-1][3] > full[0][3]:
    over_sale = (full[-1][4] - full[0][4]) * 1000 / (full[-1][3] - full[0][3]) / rate
per_buyer = None
if peak and peak[1] > 0:
    per_buyer = (peak[2] - mem_before) / peak[1]
polls = sim.get("polls_total", 0)
# Every request the waitrooms answered (joins, polls, leaves), from the tool's answer counts.
requests = sum(sim.get("answers", {}).values()) or polls
spent = [a - b for a, b in zip(cpu_after, cpu_before)]
cpu = sum(spent)
per_1000 = lambda seconds: seconds / polls * 1000 if polls else None
primaries = [
    {"port": int(p), "sale_slot": p == sale_port, "cpu_seconds": round(c, 3),
     "cpu_seconds_per_1000_polls": per_1000(c)}
    for p, c in zip(ports, spent)
]
busiest = max(primaries, key=lambda p: p["cpu_seconds"], default=None)
out = {
    "used_memory_before": mem_before,
    "peak_queue_length": peak[1] if peak else None,
    "used_memory_at_peak": peak[2] if peak else None,
    "bytes_per_waiting_buyer": per_buyer,
    "redis_cpu_seconds": cpu,
    "status_polls": polls,
    "redis_cpu_seconds_per_1000_polls": per_1000(cpu),
    "line_shards": shards,
    "redis_cpu_cap_cores": capped,
    "redis_fill_connections": int(sys.argv[14]),
    "admit_ticks": admit_rounds,
    "reaper_rounds": reaper_rounds,
    "status_calls": run_batches[1],
    "polls_a_status_call": polls_a_call,
    "join_calls": run_batches[3],
    "joins_a_join_call": joins_a_call,
    "primaries": primaries or None,
    "busiest_primary_cpu_seconds_per_1000_polls": busiest["cpu_seconds_per_1000_polls"] if busiest else None,
    "waitroom_cpu_seconds": waitroom_cpu,
    "waitroom_cpu_seconds_per_1000_requests": waitroom_cpu / requests * 1000 if requests else None,
    "nginx_cpu_seconds": nginx_cpu,
    "admitted_total": counted[-1][4] if counted else None,
    "most_admitted_in_10s": most_10s,
    "most_admitted_in_10s_over_r10": most_10s / (rate * 10) if most_10s is not None and rate else None,
    "least_admitted_in_10s": least_10s,
    "least_admitted_in_10s_over_r10": least_10s / (rate * 10) if least_10s is not None and rate else None,
    "admitted_over_sale_over_r": over_sale,
    "note": f"a private Redis held to {capped} cores and kept full by redis-fill (fill.txt): its CPU "
            "includes the filler's" if capped and int(sys.argv[14]) else
            f"a private Redis held to {capped} cores: its memory and CPU are this run's" if capped else
            "a private Redis Cluster: memory summed over its primaries" if ports else
            "the machine's shared Redis: memory and CPU include whatever else ran against it",
}
json.dump(out, open(f"{art}/redis.json", "w"), indent=2)
fmt = lambda v, f: "-" if v is None else format(v, f)
print(f"[dropline] line-sim: Redis: peak line {out['peak_queue_length']}, "
      f"{fmt(per_buyer, '.0f')} B per waiting buyer, {cpu:.2f} CPU s over {polls} polls "
      f"({fmt(out['redis_cpu_seconds_per_1000_polls'], '.3f')} s per 1,000); waitrooms "
      f"{waitroom_cpu:.2f} CPU s ({fmt(out['waitroom_cpu_seconds_per_1000_requests'], '.3f')} s per "
      f"1,000 requests), nginx {nginx_cpu:.2f} s; server admitted "
      f"{out['admitted_total']}, most in 10 s {fmt(most_10s, '.0f')} "
      f"({fmt(out['most_admitted_in_10s_over_r10'], '.3f')} of R x 10), least {fmt(least_10s, '.0f')} "
      f"({fmt(out['least_admitted_in_10s_over_r10'], '.3f')}), over the sale "
      f"{fmt(over_sale, '.3f')} of R; waitrooms' script calls: "
      f"{fmt(polls_a_call, '.1f')} polls a status call ({run_batches[1]} calls), "
      f"{fmt(joins_a_call, '.1f')} joins a join call ({run_batches[3]}); the leader's ticks "
      f"{admit_rounds}, reaper rounds {reaper_rounds}"
      + (f"; Redis held to {capped} cores" if capped else ""))
for p in primaries:
    print(f"[dropline] line-sim: primary {p['port']}{' (the sale slot)' if p['sale_slot'] else ''}: "
          f"{p['cpu_seconds']:.2f} CPU s, {fmt(p['cpu_seconds_per_1000_polls'], '.3f')} s per 1,000 polls")


# The run's share of INFO commandstats, per server: "cmdstat_<name>:calls=N,usec=U,...".
def commandstats(path):
    rows = {}
    try:
        text = open(path).read()
    except OSError:
        return rows
    for line in text.splitlines():
        name, _, fields = line.strip().partition(":")
        if name.startswith("cmdstat_"):
            f = dict(kv.split("=", 1) for kv in fields.split(",") if "=" in kv)
            rows[name[len("cmdstat_"):]] = (int(f.get("calls", 0)), int(f.get("usec", 0)))
    return rows


with open(f"{art}/commandstats-run.tsv", "w") as tsv:
    tsv.write("server\tcommand\tcalls\tusec\tcalls a poll\tus a call\tus a poll\n")
    for port in ports or [""]:
        suffix = f".{port}" if port else ""
        before = commandstats(f"{art}/commandstats-before{suffix}.txt")
        after = commandstats(f"{art}/commandstats-after{suffix}.txt")
        run = {n: (c - before.get(n, (0, 0))[0], u - before.get(n, (0, 0))[1]) for n, (c, u) in after.items()}
        shown = 0
        for name, (calls, usec) in sorted(run.items(), key=lambda kv: -kv[1][1]):
            if calls <= 0 or not polls:
                continue
            tsv.write(f"{port or 'redis'}\t{name}\t{calls}\t{usec}\t{calls / polls:.4f}\t"
                      f"{usec / calls:.1f}\t{usec / polls:.2f}\n")
            if shown < 8:
                shown += 1
                print(f"[dropline] line-sim: {('primary ' + port + ': ') if port else ''}{name}: "
                      f"{calls / polls:.3f} calls a poll, {usec / calls:.1f} us a call, {usec / polls:.2f} us a poll")
PY
dl_log "line-sim: output in ${art}/ (line-sim exit ${rc})"
exit "${rc}"
