"""The shared part of the hand-run Lua poll benchmarks (bench/eta-waits-ab.py,
bench/line-poll-ab.py, bench/poll-places-ab.py, bench/poll-batch-cost.py; bench/redis-fill.py
uses its sale and line set-up): a waiting line's places written straight into a private Redis,
and one measured run of a status script over it.

Each run makes CALLS pipelined calls of BATCH distinct waiting users and reads, a poll, the
script's time (INFO commandstats), Redis's CPU (INFO cpu) and the commands the script made.
"""

import argparse
import statistics
import struct

import redis

ORDER = 65536
BATCH = 48
CALLS = 2000
N = 10_000
# The order key of the first arrival after the opening (lua/lib/prelude.lua's PRE_KEYS).
AFTER_OPENING = 4294967296


def ab_start(scripts, line=False):
    """Parses an A/B's arguments: a script file for each of `scripts` ({flag: help}), --line
    when `line`, --rounds and --port; connects to the private Redis on --port and flushes it
    (never point it at a shared server). Returns (args, the client, {flag: the script's SHA})."""
    ap = argparse.ArgumentParser()
    for flag, text in scripts.items():
        ap.add_argument(f"--{flag}", required=True, help=text)
    if line:
        ap.add_argument("--line", action="store_true", help="wr_line_status on a line shard")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--port", type=int, default=17990)
    a = ap.parse_args()
    r = redis.Redis(port=a.port)
    r.flushall()
    return a, r, {flag: r.script_load(open(getattr(a, flag)).read()) for flag in scripts}


def place_line(r, q, users, now_s, key=lambda i: AFTER_OPENING + i):
    """Puts users[i] in zset q at order key key(i), stamped now."""
    pipe = r.pipeline(transaction=False)
    for i, u in enumerate(users):
        pipe.zadd(q, {u: key(i) * ORDER + (now_s % ORDER)})
        if i % 1000 == 999:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    pipe.execute()


def status_keys(prefix):
    """wr_status.lua's KEYS for a sale whose keys start with prefix (its own slot's line; keep
    in step with the script's KEYS comment)."""
    return [prefix + k for k in ["cfg", "avail", "held", "q", "adm", "wr", "skip", "wt", "wtp"]]


def open_sale(r, prefix, now_ms):
    """A sale's cfg, avail and held under prefix: open for a minute, 100 admissions a second, a
    million units, no notice or groups (what wr_status.lua reads besides the line)."""
    r.hset(prefix + "cfg", mapping={
        "opens_at": now_ms - 60_000, "closes_at": 0, "paused": 0, "closed": 0,
        "admit_per_second": 100, "max_active": 0, "per_user_limit": 1, "notice": "",
        "groups": ""})
    r.set(prefix + "avail", 1_000_000)
    r.set(prefix + "held", 0)


def pack(knots):
    """A count curve as lmeta holds it (waitroom/src/line/positions.rs `pack`)."""
    return b"".join(struct.pack("<dd", x, c) for x, c in knots)


def measure(r, sha, keys, head, users, calls=CALLS):
    """One run: `calls` calls of sha with keys, ARGV = head + BATCH users each.
    Returns (script µs a poll, Redis CPU µs a poll, {command: calls a poll})."""
    before, c0 = r.info("commandstats"), r.info("cpu")
    pipe = r.pipeline(transaction=False)
    for c in range(calls):
        off = (c * BATCH) % (len(users) - BATCH)
        pipe.evalsha(sha, len(keys), *keys, *head, *users[off:off + BATCH])
        if c % 100 == 99:
            for reply in pipe.execute():
                if isinstance(reply, list) and reply and reply[0] == b"not_found":
                    raise SystemExit("the script says not_found: the set-up is wrong")
            pipe = r.pipeline(transaction=False)
    pipe.execute()
    after, c1 = r.info("commandstats"), r.info("cpu")
    polls = calls * BATCH
    cpu = sum(c1[k] - c0[k] for k in ("used_cpu_user", "used_cpu_sys")) * 1e6 / polls
    us = (after["cmdstat_evalsha"]["usec"]
          - before.get("cmdstat_evalsha", {"usec": 0})["usec"]) / polls
    made = {k[8:]: (after[k]["calls"] - before.get(k, {"calls": 0})["calls"]) / polls
            for k in after
            if k.startswith("cmdstat_") and k not in ("cmdstat_evalsha", "cmdstat_info")}
    return us, cpu, {k: round(v, 3) for k, v in made.items() if v > 0.001}


def report(res, base=None):
    """Prints each run's medians from res (name -> [(script µs, CPU µs) a poll, one a round]),
    and with base, its script time ÷ base's."""
    med = {n: statistics.median(x[0] for x in v) for n, v in res.items()}
    for name, v in res.items():
        ratio = f", ÷ {base} {med[name] / med[base]:.2f}" if base else ""
        print(f"{name}: script µs a poll median {med[name]:.3f} "
              f"(runs {[round(x[0], 2) for x in v]}), Redis CPU µs a poll median "
              f"{statistics.median(x[1] for x in v):.3f}{ratio}")
