# shellcheck shell=bash
# The `abuse` scenario's part of k6/run (sourced by it; uses its variables: art, prefix, api,
# waitroom, sale, hostile, half_open, hostile_seconds, hold_seconds, smoke, clean, buyers, rate).
#
#   abuse_before   Redis memory before the run; starts k6/lib/halfopen.py (half-sent
#                  connections on both servers) unless the run is clean
#   abuse_after    stops the helper, waits until every hold of the sale has ended and the keys
#                  that outlive a payment by a fixed time have lapsed, reads Redis memory again
#   abuse_report   prints the run's figures (honest, hostile, half-open, Redis) and writes them
#                  to ${art}/abuse.json; non-zero when the smoke's half-open check fails

# The server's used_memory (INFO memory): the whole Redis, which other runs share.
_abuse_used_memory() {
    dl_redis_cli INFO memory | tr -d '\r' | sed -n 's/^used_memory://p'
}

# This run's own keys (prefix*): "<keys> <bytes>" (the sum of their MEMORY USAGE), then one
# line "<kind> <keys> <bytes>" per kind of key (the name with ids replaced by *).
_abuse_prefix_memory() {
    dl_redis_cli EVAL "
        local cursor, keys, bytes, kinds, order = '0', 0, 0, {}, {}
        local uuid = '%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x'
        repeat
            local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
            cursor = r[1]
            for _, k in ipairs(r[2]) do
                local size = redis.call('MEMORY', 'USAGE', k) or 0
                keys, bytes = keys + 1, bytes + size
                local kind = string.gsub(string.gsub(k, uuid, '*'), '%d+', 'N')
                if not kinds[kind] then
                    kinds[kind] = {0, 0}
                    order[#order + 1] = kind
                end
                kinds[kind][1] = kinds[kind][1] + 1
                kinds[kind][2] = kinds[kind][2] + size
            end
        until cursor == '0'
        local out = {keys .. ' ' .. bytes}
        for _, kind in ipairs(order) do
            out[#out + 1] = kind .. ' ' .. kinds[kind][1] .. ' ' .. kinds[kind][2]
        end
        return out" 0 "${prefix}*"
}

_abuse_memory() {
    local when="$1" used own
    used="$(_abuse_used_memory)"
    own="$(_abuse_prefix_memory)"
    python3 - "${used}" "$(date -u +%FT%TZ)" "${own}" >"${art}/redis-${when}.json" <<'PY'
import json, sys
lines = sys.argv[3].splitlines()
keys, size = map(int, lines[0].split())
kinds = {}
for line in lines[1:]:
    kind, n, b = line.rsplit(" ", 2)
    kinds[kind] = {"keys": int(n), "bytes": int(b)}
print(json.dumps({"used_memory": int(sys.argv[1]), "own_keys": keys, "own_bytes": size,
                  "at": sys.argv[2], "own_by_kind": kinds}, indent=1))
PY
    dl_log "k6 abuse: Redis ${when}: used_memory ${used} B; $(head -1 <<<"${own}" | sed 's/ / key(s), /') B in ${prefix}* keys"
}

abuse_before() {
    _abuse_memory before
    if ((hostile > 0 && half_open > 0)); then
        # Bounded: it stops by itself 30 s after the hostile traffic should have ended.
        python3 k6/lib/halfopen.py --target "${waitroom#http://}" --target "${api#http://}" \
            --connections "${half_open}" --seconds "$((hostile_seconds + 30))" \
            --report "${art}/halfopen.json" >"${art}/halfopen.log" 2>&1 &
        helper_pid=$!
        dl_log "k6 abuse: holding ${half_open} half-sent connection(s) on each server (pid ${helper_pid})"
    fi
}

abuse_after() {
    local k6_ended=${SECONDS}
    if [[ -n "${helper_pid}" ]]; then
        kill -TERM "${helper_pid}" 2>/dev/null || true
        wait "${helper_pid}" 2>/dev/null || true
        helper_pid=""
    fi
    # Every hold ends: HELD by its timer (hold_seconds), PAYING by the payment timeout (30 s by
    # default), then the sweeper (5 s). Bounded.
    local deadline=$((SECONDS + hold_seconds + 90)) held=""
    dl_log "k6 abuse: waiting until the sale holds nothing (up to $((hold_seconds + 90)) s)"
    while ((SECONDS < deadline)); do
        held="$(curl -sf "${api}/api/sales/${sale}/stock" | json_field held || true)"
        [[ "${held}" == 0 ]] && break
        sleep 1
    done
    if [[ "${held}" != 0 ]]; then
        dl_log "k6 abuse: FAILED: the sale still holds ${held:-?} unit(s)"
        _abuse_memory after
        return 1
    fi
    # Then the keys that outlive a payment by a fixed time (the card and the publish claim:
    # payment timeout + 10 s) lapse too, so that both runs are read at the same point whatever
    # their holds did: k6's end + payment timeout + 15 s, and at least one sweep (5 s) after
    # the holds ended.
    local settle=$((k6_ended + ${DROPLINE_PAYMENT__TIMEOUT_SECONDS:-30} + 15 - SECONDS))
    ((settle >= 5)) || settle=5
    dl_log "k6 abuse: the holds have ended; reading Redis in ${settle} s"
    sleep "${settle}"
    _abuse_memory after
}

abuse_report() {
    if [[ ! -f "${art}/summary.json" || ! -f "${art}/redis-after.json" ]]; then
        dl_log "k6 abuse: no figures to report (k6 or the wait for the holds did not finish)"
        return 1
    fi
    python3 - "${art}" "${buyers}" "${hostile}" "${half_open}" "${smoke}" "${rate}" <<'PY'
import json, os, sys
art, buyers, hostile, half_open, smoke, rate = sys.argv[1], *map(int, sys.argv[2:])
metrics = json.load(open(os.path.join(art, "summary.json")))["metrics"]
def m(name):
    return metrics.get(name, {})
before = json.load(open(os.path.join(art, "redis-before.json")))
after = json.load(open(os.path.join(art, "redis-after.json")))
j2p = m("honest_join_to_paid")
out = {
    "honest": {
        "buyers": buyers,
        "arrivals_per_second": rate,
        "paid": int(m("honest_paid").get("count", 0)),
        "join_to_paid_ms": {k: round(j2p[k]) for k in ("med", "p(90)", "p(99)", "max") if k in j2p},
        "requests": int(m("http_reqs{role:honest}").get("count", 0)),
        "unexpected": int(m("unexpected_responses").get("count", 0)),
    },
    "hostile": {"buyers": hostile, "answers": {}},
    "server_errors": int(m("server_errors").get("count", 0)),
    "redis": {"before": before, "after": after,
              "used_memory_delta": after["used_memory"] - before["used_memory"],
              "own_bytes_delta": after["own_bytes"] - before["own_bytes"]},
}
for name, v in metrics.items():
    if name.startswith("hostile_answers{") and v.get("count", 0) > 0:
        tags = dict(t.split(":", 1) for t in name[len("hostile_answers{"):-1].split(","))
        out["hostile"]["answers"].setdefault(tags["action"], {})[tags["answer"]] = int(v["count"])
out["hostile"]["requests"] = int(m("http_reqs{role:hostile}").get("count", 0))
path = os.path.join(art, "halfopen.json")
if os.path.exists(path):
    out["half_open"] = json.load(open(path))["half_open"]
json.dump(out, open(os.path.join(art, "abuse.json"), "w"), indent=2)

h = out["honest"]
print(f"[dropline] k6 abuse: honest buyers {h['buyers']} ({rate}/s): paid {h['paid']}, "
      f"join -> paid p50 {h['join_to_paid_ms'].get('med')} ms, p99 {h['join_to_paid_ms'].get('p(99)')} ms, "
      f"{h['requests']} requests, {h['unexpected']} unexpected answers")
for action, answers in sorted(out["hostile"]["answers"].items()):
    listed = ", ".join(f"{k} x{v}" for k, v in sorted(answers.items(), key=lambda kv: -kv[1]))
    print(f"[dropline] k6 abuse: hostile {action}: {listed}")
if "half_open" in out:
    t = out["half_open"]["total"]
    print(f"[dropline] k6 abuse: half-sent connections ({half_open} per server): opened {t['opened']}, "
          f"closed by the server {t['closed_by_server']}, failed to connect {t['connect_failed']}, "
          f"open at the end {t['open_at_end']}")
    for target in out["half_open"]["targets"]:
        if "server_cut_after_s" in target:
            print(f"[dropline] k6 abuse:   {target['target']}: cut after {target['server_cut_after_s']} s")
r = out["redis"]
mib = 1024 * 1024
print(f"[dropline] k6 abuse: Redis used_memory before {before['used_memory']} B, after holds end "
      f"{after['used_memory']} B ({r['used_memory_delta'] / mib:+.3f} MiB; the server is shared); "
      f"this run's keys {before['own_keys']} -> {after['own_keys']}, "
      f"{before['own_bytes']} -> {after['own_bytes']} B ({r['own_bytes_delta'] / mib:+.3f} MiB)")
ok = True
if smoke and hostile > 0 and half_open > 0:
    cut = out.get("half_open", {}).get("total", {}).get("closed_by_server", 0)
    if cut == 0:
        print("[dropline] k6 abuse: FAILED: the server cut none of the half-sent connections")
        ok = False
sys.exit(0 if ok else 1)
PY
}
