# compose/chaos --draw: one chaos run against a draw sale (design/draw.md). Sourced by
# compose/chaos after its helpers (event, supervise, kill_and_restart, stall_redis, audit_json);
# not a script of its own.
#
# Per run: the compose topology as local processes (two replicas of each service, the draw
# leader `dropline worker draw` among them), B entrants (--buyers) for a draw sale of S units
# (--stock, per_user_limit 1), entries open for DL_CHAOS_DRAW_ENTRY_SECONDS (default 15),
# claims of DL_CHAOS_DRAW_CLAIM_SECONDS (default 20: k6/draw.js's waitlisted entrants poll every
# 10-12 s), the draw leader ticking every 100 ms and revealing 2 s after the freeze. k6/draw.js
# drives the entrants through nginx (30% of the ranks never order, so wins lapse and pass on).
# From the freeze (entries_close_at, "close"):
#   close+2   kill -9 of the draw leader (the replica holding `<prefix>:drawer`) as it reveals,
#             ranks and makes the first promotions; restarted 2 s later
#   close+5   kill -9 of an api replica (winners are ordering)
#   close+7   Redis stalls 3 s (CLIENT PAUSE 3000 ALL: orders, payments and the leader's ticks wait)
#   lapse     20 ms after the first open win's claim deadline (read from the sale's `wdl`), kill -9
#             of the draw leader again: around the tick that lapses the idle wins and promotes
#             the next ranks (before it, or between its Lua step and its MySQL writes and mails)
#   +3        kill -9 of a payment worker (the backfilled winners are ordering)
#   +2        Redis stalls 3 s again (they are paying)
# After k6 it checks from outside (k6/lib/draw_check.py: 0 oversold, every paid order a claimed
# win's, no account with two wins or two paid orders, the winners list ranks 1..M and what MySQL
# holds), recomputes the draw (scripts/draw-verify: the winners are the ranking's first ranks)
# and runs `dropline sale audit --settled` (the draw invariants included). k6's own verdict is
# ignored (a winner whose order met a killed api may lose the win: that is allowed; breaking an
# invariant is not).

# lease_holder LEASE PREFIX: the replica NAME (PREFIX-N) whose pid holds the lease `<prefix>:LEASE`
# (the draw leader's value is draw-<pid>-<random>; the admitter's host:pid:random). Empty when
# none of them does.
lease_holder() {
    local lease="$1" prefix="$2" holder i
    holder="$(dl_redis_cli GET "${TOPO_PREFIX}:${lease}" 2>/dev/null || true)"
    for i in "${!names[@]}"; do
        [[ "${names[i]}" == "${prefix}"-* ]] || continue
        if [[ "${holder}" == "draw-${pids[i]}-"* || "${holder}" == *":${pids[i]}:"* ]]; then
            printf '%s\n' "${names[i]}"
            return 0
        fi
    done
    return 0
}

# kill_draw_leader WHY: kill -9 of the replica leading the draws, restarted 2 s later on its
# address; records how long until a live replica held the lease again (the lease outlives its
# dead holder by at most its length).
kill_draw_leader() {
    local why="$1" leader old pid killed_at took="" restarted=no value
    leader="$(lease_holder drawer worker-draw)"
    if [[ -z "${leader}" ]]; then
        event "ODD: no worker-draw replica holds the draw lease (${why})"
        echo "no draw leader to kill (${why})" >>"${run}/odd.txt"
        return 0
    fi
    old="$(dl_redis_cli GET "${TOPO_PREFIX}:drawer" 2>/dev/null || true)"
    pid="$(pid_of "${leader}")"
    kill -KILL "${pid}" 2>/dev/null || true
    killed_at="$(date +%s%3N)"
    wait "${pid}" 2>/dev/null || true
    event "kill -9 ${leader} (pid ${pid}), the draw leader (${why}), at $(date -u -d "@$((killed_at / 1000))" +%H:%M:%S).$(printf '%03d' $((killed_at % 1000)))"
    while (($(date +%s%3N) - killed_at < 30000)); do
        value="$(dl_redis_cli GET "${TOPO_PREFIX}:drawer" 2>/dev/null || true)"
        if [[ -z "${took}" && -n "${value}" && "${value}" != "${old}" ]]; then
            took=$(($(date +%s%3N) - killed_at))
            event "the draw lease held again, by $(lease_holder drawer worker-draw), $((took / 1000)).$(printf '%03d' $((took % 1000))) s after the kill"
        fi
        if [[ "${restarted}" == no ]] && (($(date +%s%3N) - killed_at >= 2000)); then
            topo_start_replica "${leader}" "${addr[${leader}]#http://}"
            wait_ready "${addr[${leader}]}/readyz" "${leader} after its restart" 60
            event "${leader} restarted (pid $(pid_of "${leader}")) and ready"
            restarted=yes
        fi
        [[ -n "${took}" && "${restarted}" == yes ]] && break
        sleep 0.1
    done
    if [[ -z "${took}" ]]; then
        event "ODD: no replica took the draw lease within 30 s of the kill"
        echo "draw lease not taken over within 30 s (${why})" >>"${run}/odd.txt"
        took=30000
    fi
    printf '%d.%03d\n' $((took / 1000)) $((took % 1000)) >>"${run}/takeovers.txt"
}

# first_claim_deadline_ms: the earliest deadline of an open win (the sale's `wdl`), or empty.
first_claim_deadline_ms() {
    dl_redis_cli ZRANGE "${TOPO_PREFIX}:{s:${sale}}:wdl" 0 0 WITHSCORES 2>/dev/null | sed -n 2p
}

# at_next_lapse WHAT CMD...: waits for the earliest open claim deadline (at most 60 s), then runs
# CMD 20 ms after it, when the leader's next tick (every 100 ms) lapses that win and promotes the
# next rank; says so afterwards (the event line costs a python start, ~50 ms).
at_next_lapse() {
    local what="$1" due now_ms deadline=$((SECONDS + 60))
    shift
    while ((SECONDS < deadline)); do
        due="$(first_claim_deadline_ms)"
        [[ -n "${due}" ]] && break
        supervise
        sleep 0.2
    done
    if [[ -z "${due}" ]]; then
        event "no open win to lapse within 60 s; ${what} skipped"
        echo "${what}: no open win lapsed" >>"${run}/odd.txt"
        return 0
    fi
    due="${due%.*}"
    while :; do
        now_ms="$(date +%s%3N)"
        ((now_ms < due + 20)) || break
        if ((due + 20 - now_ms > 700)); then
            supervise
            sleep 0.5
        else
            sleep "$(printf '0.%03d' $((due + 20 - now_ms)))"
        fi
    done
    "$@"
    event "(the claim deadline was $(date -u -d "@$((due / 1000))" +%H:%M:%S).$(printf '%03d' $((due % 1000))): ${what})"
}

# run_draw_one N: one draw chaos run; appends its row to results.tsv. Runs in a subshell.
run_draw_one() {
    local n="$1" started=${SECONDS} idx k6_pid k6_rc=0 close_epoch
    local entry_seconds="${DL_CHAOS_DRAW_ENTRY_SECONDS:-15}" claim="${DL_CHAOS_DRAW_CLAIM_SECONDS:-20}"
    idx=$(((n - 1) % 2 + 1))
    TOPO_RUN="$(printf '%s/run-%02d' "${root}" "${n}")"
    topo_init_run
    trap 'stop_all; restore_rabbitmq || true; restore_mariadb || true' EXIT
    : >"${run}/chaos.log"
    : >"${run}/odd.txt"
    : >"${run}/takeovers.txt"

    export DROPLINE_PAYMENT__TIMEOUT_SECONDS=5
    export DROPLINE_PAYMENT__SIM_LATENCY_MS=200
    export DROPLINE_EXPIRY__SWEEP_INTERVAL_SECONDS=1
    export DROPLINE_AMQP__RETRY_DELAY_MS=1000
    export DROPLINE_DRAW__TICK_MS=100
    export DROPLINE_DRAW__REVEAL_DELAY_SECONDS=2
    topo_export_env --lift-ip-limits
    topo_wipe
    topo_migrate_and_users
    topo_start_smtp
    topo_start_replicas
    topo_start_nginx ""
    topo_write_targets
    DROPLINE_LOADTEST__ALLOW=true DROPLINE_AUTH__SIGNING_KEY_FILE="${keydir}/access.pem" \
        "${bin}" loadtest seed --users "${buyers}" --out "${run}/buyers.tsv" >/dev/null
    # Open since a minute ago (the first join is an entry); entries close entry_seconds from now.
    close_epoch=$(($(date +%s) + entry_seconds))
    topo_make_sale "${stock}" "$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ)" "" \
        "\"mode\":\"draw\",\"entries_close_at\":\"$(date -u -d "@${close_epoch}" +%Y-%m-%dT%H:%M:%SZ)\",\"claim_seconds\":${claim},\"hold_seconds\":10"
    t0="${close_epoch}"

    WAITROOM="${base}" API="${base}" SALE="${sale}" STOCK="${stock}" BUYERS="${buyers}" \
        VUS="${vus}" IDLE_PERCENT=30 BUYERS_FILE="${run}/buyers.tsv" MAX_DURATION=5m \
        k6 run --quiet --summary-export "${run}/k6-summary.json" k6/draw.js >"${run}/k6.txt" 2>&1 &
    k6_pid=$!
    event "draw sale ${sale}: ${buyers} entrants, stock ${stock}, claims of ${claim} s; entries close at +0"

    local at
    for at in 2 5 7; do
        while (($(date +%s) < close_epoch + at)); do
            supervise
            sleep 0.2
        done
        case "${at}" in
            2) kill_draw_leader "reveal and first promotions" ;;
            5) kill_and_restart "api-${idx}" ;;
            7) stall_redis ;;
        esac
    done
    at_next_lapse "kill -9 of the draw leader" kill_draw_leader "first backfill"
    sleep 3
    kill_and_restart "worker-payment-${idx}"
    sleep 2
    stall_redis

    while kill -0 "${k6_pid}" 2>/dev/null; do
        supervise
        sleep 1
    done
    wait "${k6_pid}" || k6_rc=$?
    event "k6 ended (exit ${k6_rc}; its thresholds do not count here)"

    # From outside, as a customer could: the draw settled, not oversold, one win an account,
    # the winners a prefix of the ranking, then the recomputed draw.
    local check_rc=0 verify_rc=0 audit_rc=1 i
    python3 k6/lib/draw_check.py --api "${base}" --waitroom "${base}" --sale "${sale}" \
        --stock "${stock}" --entrants "${buyers}" --out "${run}" --settle 120 \
        >"${run}/draw-check.txt" 2>&1 || check_rc=$?
    event "k6/lib/draw_check.py: exit ${check_rc}"
    scripts/draw-verify "${base}" "${sale}" >"${run}/ranking.txt" 2>"${run}/draw-verify.txt" || verify_rc=$?
    event "scripts/draw-verify: exit ${verify_rc}"
    for i in 1 2 3 4 5 6; do
        audit_rc=0
        audit_json --settled >"${run}/audit.json" || audit_rc=$?
        ((audit_rc == 0)) && break
        sleep 5
    done
    ((i == 1)) || echo "audit --settled passed only at try ${i} (exit ${audit_rc})" >>"${run}/odd.txt"
    event "dropline sale audit --settled --json: exit ${audit_rc}"

    local figures
    figures="$(python3 - "${run}" <<'PY'
import json, os, sys
run = sys.argv[1]
try:
    d = json.load(open(os.path.join(run, "draw.json")))
except (OSError, ValueError):
    d = {"problems": ["draw.json missing: the check could not read the draw"]}
problems = d.get("problems", [])
has = lambda word: sum(1 for p in problems if word in p)
takeovers = [float(x) for x in open(os.path.join(run, "takeovers.txt")).read().split()]
print(has("oversold"), has("two wins") + has("two paid orders") + has("two entries"),
      has("ranks 1..M") + has("listed at rank") + has("winners list has"),
      d.get("promoted", "-"), d.get("claimed", "-"), d.get("forfeited", "-"),
      d.get("paid_units", "-"), len(takeovers), max(takeovers, default=0))
PY
)"
    local oversold two prefix promoted claimed forfeited paid kills takeover
    read -r oversold two prefix promoted claimed forfeited paid kills takeover <<<"${figures}"
    local breach=OK
    if ((check_rc != 0 || verify_rc != 0 || audit_rc != 0)); then
        breach=BREACH
    fi
    local duration=$((SECONDS - started)) odd
    odd="$(paste -sd ';' "${run}/odd.txt")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "${n}" "$(date -u +%H:%M:%S)" "${oversold}" "${two}" "${prefix}" "${check_rc}" \
        "${verify_rc}" "${audit_rc}" "${promoted}" "${claimed}" "${forfeited}" "${paid}/${stock}" \
        "${kills}" "${takeover}" "${duration}" "${breach}${odd:+ (${odd})}" >>"${results}"
    printf 'run %d/%d: oversold %s, accounts with two wins %s, winners not a prefix %s, draw check exit %s, draw-verify exit %s, audit exit %s, promoted %s (claimed %s, forfeited %s), paid %s/%s, %s leader kills (longest takeover %s s), %s s: %s%s\n' \
        "${n}" "${runs}" "${oversold}" "${two}" "${prefix}" "${check_rc}" "${verify_rc}" \
        "${audit_rc}" "${promoted}" "${claimed}" "${forfeited}" "${paid}" "${stock}" "${kills}" \
        "${takeover}" "${duration}" "${breach}" "${odd:+; odd: ${odd}}"

    stop_all
    (topo_wipe >/dev/null 2>&1) || dl_warn "chaos: cleaning up after run ${n} failed"
    trap - EXIT
    restore_rabbitmq || true
    restore_mariadb || true
}

# draw_results_md: results.tsv of the draw runs as a Markdown table.
draw_results_md() {
    printf '| run | ended | oversold | two wins | not a prefix | draw check | draw-verify | audit | promoted | claimed | forfeited | paid/stock | leader kills | longest takeover (s) | s | verdict |\n'
    printf '|%s\n' "$(printf -- '---|%.0s' $(seq 1 16))"
    awk -F'\t' '{ line = "|"; for (i = 1; i <= NF; i++) line = line " " $i " |"; print line }' "${results}"
}
