#!/usr/bin/env python3
"""What one Redis core spends on a status poll as a function of how many polls a call carries
(BENCHMARKS.md "batch-cost", issue #22 §1's scale note): the fixed part of a call and the part
each poll adds, and from them the polls a second one core can answer at a given batch size.

    lua-body wr_status > wr_status.lua      # the bench crate's lua-body (target/.../lua-body)
    bench/poll-batch-cost.py --script wr_status.lua [--port 17990] [--line 600000] \
        [--polls 60000] [--sizes 1,2,4,8,16,32,64,128,256]

It needs a private Redis on --port, which it flushes (never point it at a shared server), for
example one pinned to a core: `taskset -c 1 redis-server --port 17990 --save "" --daemonize yes`.

The set-up is an open sale's line of --line waiting places, stamped three seconds ago, so that
every poll refreshes its place's stamp as a real buyer's does (a second or more between polls).
For each batch size k it makes --polls / k calls of k distinct waiting users, each user polled
once in the whole run, one call at a time and waiting for each answer (as a waitroom's batcher
keeps one call in flight per sale): so each call pays what a real one does, a read, a write and
a wake-up, which a pipelined run would share. It reads Redis's CPU (INFO cpu, user + system)
before and after each size, and fits CPU a call = a + b k by least squares over the sizes.
"""

import argparse
import os
import time

import redis

from luapoll import open_sale, place_line, status_keys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", required=True, help="wr_status.lua's body (lua-body wr_status)")
    ap.add_argument("--port", type=int, default=17990)
    ap.add_argument("--line", type=int, default=600_000, help="waiting places in the line")
    ap.add_argument("--polls", type=int, default=60_000, help="polls made at each batch size")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64,128,256")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    if a.polls * len(sizes) > a.line:
        raise SystemExit("--line must hold --polls users for every size (each is polled once)")
    r = redis.Redis(port=a.port)
    r.flushall()
    sha = r.script_load(open(a.script).read())
    sec, usec = r.time()
    now_ms = sec * 1000 + usec // 1000
    p = "bc:{s:x}:"
    open_sale(r, p, now_ms)
    keys = status_keys(p)
    # ARGV[1]: the return grace in ms (abandon_after, 120 s by default); then the users.
    head = [120_000]
    users = [os.urandom(16) for _ in range(a.line)]
    print(f"placing {a.line} waiting buyers ...", flush=True)
    place_line(r, p + "q", users, sec - 3)
    reply = r.evalsha(sha, len(keys), *keys, *head, users[-1])
    if not isinstance(reply, list) or reply[0] == b"not_found":
        raise SystemExit(f"the script's set-up is wrong: {reply!r}")

    def cpu():
        c = r.info("cpu")
        return c["used_cpu_user"] + c["used_cpu_sys"]

    rows = []
    next_user = 0
    for k in sizes:
        calls = a.polls // k
        batch_users = users[next_user:next_user + calls * k]
        next_user += calls * k
        c0, t0 = cpu(), time.perf_counter()
        for c in range(calls):
            r.evalsha(sha, len(keys), *keys, *head, *batch_users[c * k:(c + 1) * k])
        c1, t1 = cpu(), time.perf_counter()
        per_call = (c1 - c0) * 1e6 / calls
        rows.append((k, calls, per_call))
        print(f"k {k:4d}: {calls:6d} calls in {t1 - t0:5.1f} s, Redis CPU {per_call:8.1f} us a call, "
              f"{per_call / k:6.2f} us a poll", flush=True)
    # Least squares of CPU a call against k.
    n = len(rows)
    mk = sum(k for k, _, _ in rows) / n
    my = sum(y for _, _, y in rows) / n
    b = sum((k - mk) * (y - my) for k, _, y in rows) / sum((k - mk) ** 2 for k, _, _ in rows)
    fixed = my - b * mk
    print(f"fit: CPU a call = {fixed:.1f} us + {b:.2f} us a poll")
    for k in sizes:
        per_poll = fixed / k + b
        print(f"  at {k:4d} polls a call: {per_poll:6.2f} us a poll, one core {1e6 / per_poll:9,.0f} polls/s")


if __name__ == "__main__":
    main()
