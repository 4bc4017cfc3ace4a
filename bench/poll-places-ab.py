#!/usr/bin/env python3
"""Redis's cost of a waiting buyer's poll, two builds' status scripts side by side (BENCHMARKS.md
"poll-places"): a batch's places read one by one (ZSCORE, ZADD XX a poll) or all at once
(ZMSCORE, one ZADD XX a batch).

    lua-body wr_status > new.lua            # each build's bench crate (target/.../lua-body)
    bench/poll-places-ab.py --old old.lua --new new.lua [--rounds 8] [--port 17990]
    bench/poll-places-ab.py --line --old old-line.lua --new new-line.lua    # wr_line_status

It needs a private Redis on --port, which it flushes (never point it at a shared server), for
example one pinned to a core: `taskset -c 1 redis-server --port 17990 --save "" --daemonize yes`.

The set-up is an open sale's line of 100,000 waiting places (one shard: the sale's q; --line: a
line shard's q with its lmeta and the other shards' curve held by the edge), nobody waiting for
a first ETA. Each run makes 2,000 pipelined calls of 48 distinct waiting users (96,000 polls,
each user at most once; a fresh run a third as many), and reads the script's time (INFO
commandstats) and Redis's CPU (INFO cpu) a poll, and the commands a poll made from Lua. Before
each run every place is stamped:
  fresh   with this second, at its start: a poll finds its stamp current and writes nothing
          (as wrk's polls of one ticket, many a second, mostly do);
  stale   three seconds ago: every poll refreshes its stamp (as a real buyer's does, polling
          every retry_after_ms, a second or more apart).
Four runs a round (old and new, fresh and stale), in ABBA order over the rounds.
"""

import os
import time

from luapoll import BATCH, CALLS, ab_start, measure, open_sale, place_line, report, status_keys

N = 100_000


def main():
    a, r, shas = ab_start({"old": "the old status script", "new": "the new one"}, line=True)
    assert CALLS * BATCH <= N, "a run polls each user at most once"
    sec, usec = r.time()
    now_ms = sec * 1000 + usec // 1000
    users = [os.urandom(16) for _ in range(N)]
    p = "ab:{s:x}:"
    place_line(r, p + "q", users, sec)
    if a.line:
        r.hset(p + "lmeta", mapping={
            "state": "open", "opens_at": now_ms - 60_000, "closes_at": 0, "paused": 0,
            "rate": 100, "notice": "", "groups": "", "free": 1_000_000, "limited": -1,
            "qlen": N, "others": "", "seq": N, "at": "1"})
        keys = [p + k for k in ["q", "skip", "ladm", "lmeta", "lwt", "lwte"]]
        # The edge holds the curve published at "1": nothing is sent back, the edge looks up.
        head = [1_800_000, "1"]
    else:
        open_sale(r, p, now_ms)
        keys = status_keys(p)
        head = [1_800_000]

    # Every place restamped by one script (faster than a second of the clock), for a fresh
    # run right at the start of a second: the run (under a second) then stays within it.
    restamp = r.register_script("""
        local s = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
        local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
        for i = 1, #all, 2 do
          local x = tonumber(all[i + 1])
          redis.call('ZADD', KEYS[1], string.format('%.0f', x - x % 65536 + s % 65536), all[i])
        end""")

    def stamp(ago):
        if ago == 0:
            _, usec = r.time()
            time.sleep((1_000_000 - usec) / 1e6 + 0.005)
        restamp(keys=[p + "q"], args=[ago])

    names = ["old fresh", "new fresh", "old stale", "new stale"]
    res = {n: [] for n in names}
    for rnd in range(a.rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            build, kind = name.split()
            stamp(0 if kind == "fresh" else 3)
            # A fresh run polls a third as many (fewer than a second's worth), so that it ends
            # within the second its places were stamped in.
            calls = CALLS // 3 if kind == "fresh" else CALLS
            out = measure(r, shas[build], keys, head, users, calls)
            res[name].append(out[:2])
            if rnd == 0:
                print(f"{name}: calls a poll from Lua {out[2]}")
    report({n: res[n] for n in names[:2]}, base="old fresh")
    report({n: res[n] for n in names[2:]}, base="old stale")


if __name__ == "__main__":
    main()
