#!/usr/bin/env python3
"""Redis's cost of a waiting buyer's poll, two builds' status scripts side by side (BENCHMARKS.md
"eta-waits"): what a poll pays for the report's first-ETA bookkeeping.

    lua-body wr_status > new.lua            # each build's bench crate (target/.../lua-body)
    bench/eta-waits-ab.py --old old.lua --new new.lua [--rounds 8] [--port 17990]
    bench/eta-waits-ab.py --line --old old-line.lua --new new-line.lua    # wr_line_status

It needs a private Redis on --port, which it flushes (never point it at a shared server), for
example one pinned to a core: `taskset -c 1 redis-server --port 17990 --save "" --daemonize yes`.

The set-up is an open sale's line of 10,000 waiting places (one shard: the sale's q; --line: a
line shard's q with its lmeta, no other shards), none of them sampled but every 200th, whose
first ETA is already noted: a long line after its opening, where nobody waits for a first ETA.
Each run makes 2,000 calls of 48 distinct waiting users (pipelined), and reads the script's
time (INFO commandstats) and Redis's CPU (INFO cpu) a poll, and the commands a poll made from
Lua. Three runs a round, in ABBA order over the rounds:
  old                 the old script (--old), with its keys;
  new-empty           the new script (--new), its wtp/lwt empty: nobody waits for a first ETA;
  new-one-waiting     the new script with one buyer (not among the polled) in wtp/lwt: the
                      worst case, every poll looks itself up there.
The old and new scripts are told apart by their key count: the new wr_status takes wtp as
KEYS[9]; wr_line_status's keys did not change (lwt is KEYS[5] in both).
"""

import os

from luapoll import N, ORDER, ab_start, measure, open_sale, report


def main():
    a, r, shas = ab_start({"old": "the old wr_status.lua", "new": "the new one"}, line=True)
    sha_old, sha_new = shas["old"], shas["new"]
    new_source = open(a.new).read()
    new_takes_at = "ARGV[2]  the `at`" in new_source
    sec, usec = r.time()
    now_ms, now_s = sec * 1000 + usec // 1000, sec
    users = [os.urandom(16) for _ in range(N)]
    p = "ab:{s:x}:"
    pipe = r.pipeline(transaction=False)
    for i, u in enumerate(users):
        pipe.zadd(p + "q", {u: (4294967296 + i) * ORDER + (now_s % ORDER)})
    pipe.execute()
    if a.line:
        r.hset(p + "lmeta", mapping={
            "state": "open", "opens_at": now_ms - 60_000, "closes_at": 0, "paused": 0,
            "rate": 100, "notice": "", "groups": "", "free": 1_000_000, "limited": -1,
            "qlen": N, "others": "", "seq": N})
        old_keys = [p + k for k in ["q", "skip", "ladm", "lmeta", "wait", "lwte"]]
        new_keys = old_keys
        wait = p + "wait"
    else:
        open_sale(r, p, now_ms)
        for u in users[::200]:
            r.hset(p + "wt", u, "%d:%d:%d" % (now_ms - 30_000, 20_000, now_ms - 29_000))
        old_keys = [p + k for k in ["cfg", "avail", "held", "q", "adm", "wr", "skip", "wt"]]
        new_keys = old_keys + [p + "wait"]
        wait = p + "wait"

    def run(sha, keys):
        # wr_line_status of this release takes the `at` of the curve the edge holds as ARGV[2].
        head = [1_800_000, ""] if a.line and sha == sha_new and new_takes_at else [1_800_000]
        return measure(r, sha, keys, head, users)

    names = ["old", "new-empty", "new-one-waiting"]
    res = {n: [] for n in names}
    for rnd in range(a.rounds):
        for name in names if rnd % 2 == 0 else names[::-1]:
            r.delete(wait)
            if name == "old":
                out = run(sha_old, old_keys)
            else:
                if name == "new-one-waiting":
                    r.hset(wait, b"someone-else-16b", "")
                out = run(sha_new, new_keys)
            res[name].append(out[:2])
            if rnd == 0:
                print(f"{name}: calls a poll from Lua {out[2]}")
    report(res)


if __name__ == "__main__":
    main()
