#!/usr/bin/env python3
"""Redis's cost of a waiting buyer's poll on a line shard against a sale's own line
(BENCHMARKS.md "line-spread", issue #22 §2): what a spread line's poll pays over a one-slot
poll, and what counting the other shards at the edge saves.

    lua-body wr_line_status > new-line.lua     # each build's bench crate (target/.../lua-body)
    lua-body wr_status > slot.lua
    bench/line-poll-ab.py --old old-line.lua --new new-line.lua --slot slot.lua [--rounds 8]

It needs a private Redis on --port, which it flushes (never point it at a shared server), for
example one pinned to a core: `taskset -c 1 redis-server --port 17990 --save "" --daemonize yes`.

The set-up: an open sale's line of 10,000 waiting places twice, once as a sale's own line (q,
cfg, avail, held) and once as one line shard of three (q and lmeta as the leader publishes
it: `at`, and `others`, the other two shards' count curve, ~160 knots as
waitroom/src/line/positions.rs reads a shard of 10,000: the first 32 places, powers of two,
the last), nobody waiting for a first ETA. Four runs a round, in ABBA order over the rounds:
  slot          wr_status.lua (--slot) on the sale's own line;
  shard-old     --old, a wr_line_status.lua that counts the other shards in Redis;
  shard-held    --new with the edge holding the shard's curve (ARGV[2] = lmeta's at): the
                other shards are counted at the edge;
  shard-fresh   --new with no curve held (ARGV[2] = ''): every call sends the curve (what a
                call right after a new tick, or from a new edge, costs).
"""

import os

from luapoll import (AFTER_OPENING, N, ORDER, ab_start, measure, open_sale, pack, place_line,
                     report, status_keys)

AT = b"1700000000000"


def shard_curve(keys):
    """A shard's count curve as the leader reads it (CountCurve::of_shard without segments):
    knots (s, r) and (s + 1, r + 1) at ranks 0..31, 64, 128, ... and the last."""
    ranks = list(range(min(32, len(keys))))
    r = 64
    while r < len(keys):
        ranks.append(r)
        r *= 2
    if len(keys) - 1 not in ranks:
        ranks.append(len(keys) - 1)
    knots = []
    for r in ranks:
        s = keys[r] * ORDER
        knots += [(s, r), (s + 1, r + 1)]
    return knots


def curve_at(knots, x):
    """CountCurve::at: linear between knots, 0 before the first, the last count after it."""
    for i, (kx, c) in enumerate(knots):
        if kx >= x:
            if kx == x:
                return c
            if i == 0:
                return 0.0
            x0, c0 = knots[i - 1]
            return c0 + (c - c0) * (x - x0) / (kx - x0)
    return knots[-1][1] if knots else 0.0


def main():
    a, r, sha = ab_start({"old": "a wr_line_status.lua counting in Redis",
                          "new": "a wr_line_status.lua taking the edge's at",
                          "slot": "wr_status.lua"})
    sec, usec = r.time()
    now_ms, now_s = sec * 1000 + usec // 1000, sec
    users = [os.urandom(16) for _ in range(N)]

    # The sale's own line.
    s = "slot:{s}:"
    place_line(r, s + "q", users, now_s)
    open_sale(r, s, now_ms)
    slot_keys = status_keys(s)

    # One shard of three: this shard holds every third arrival, the others the rest.
    p = "line:{l}:"
    place_line(r, p + "q", users, now_s, key=lambda i: AFTER_OPENING + 3 * i)
    others = [shard_curve([AFTER_OPENING + 3 * i + j for i in range(N)]) for j in (1, 2)]
    xs = sorted({x for c in others for x, _ in c})
    summed = [(x, sum(curve_at(c, x) for c in others)) for x in xs]
    r.hset(p + "lmeta", mapping={
        "state": "open", "opens_at": now_ms - 60_000, "closes_at": 0, "paused": 0,
        "rate": 100, "notice": "", "groups": "", "free": 1_000_000, "limited": -1,
        "qlen": 3 * N, "seq": 3 * N, "at": AT, "others": pack(summed)})
    line_keys = [p + k for k in ["q", "skip", "ladm", "lmeta", "lwt", "lwte"]]
    print(f"others: {len(summed)} knots, {len(pack(summed))} bytes")

    runs = {
        "slot": (sha["slot"], slot_keys, [1_800_000]),
        "shard-old": (sha["old"], line_keys, [1_800_000]),
        "shard-held": (sha["new"], line_keys, [1_800_000, AT]),
        "shard-fresh": (sha["new"], line_keys, [1_800_000, ""]),
    }
    names = list(runs)
    res = {n: [] for n in names}
    for rnd in range(a.rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            script, keys, head = runs[name]
            out = measure(r, script, keys, head, users)
            res[name].append(out[:2])
            if rnd == 0:
                print(f"{name}: calls a poll from Lua {out[2]}")
    report(res, base="slot")


if __name__ == "__main__":
    main()
