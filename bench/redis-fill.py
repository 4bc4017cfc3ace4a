#!/usr/bin/env python3
"""Fills a private Redis's core with waitroom status calls, at full speed, so that a run can see
what a full line core does to everything else on it (BENCHMARKS.md line-sim "full core"; run by
bench/line-sim.sh with LINE_REDIS_FILL).

    bench/redis-fill.py --port 17411 [--threads 6] [--call-us 150] [--seconds 0] [--report 10]
    lua-body wr_status > wr_status.lua
    bench/redis-fill.py --port 17411 --script wr_status.lua [--batch 32] [--line 200000] ...

A CPU quota (LINE_REDIS_CPU) also makes the core bind, but by stopping Redis for most of every
quota period: a call that arrives then waits for the next period, and every call costs ten
times its time at 0.1 core, the admitter's and the reaper's included. A core that is full of
calls is different: Redis runs at its own speed and a call waits only behind the calls queued
ahead of it. This makes that load: --threads connections, each with one wr_status.lua call of
--batch distinct waiting users in flight at a time (as a waitroom's batcher sends them), on a
sale of its own under the key prefix `fill:{f}:` over a line of --line places. A waitroom's
polls of the measured sale then queue behind them, as they would behind other buyers' polls.

It writes only its own keys and never flushes, but it does fill the server: never point it at a
shared one (it refuses port 6379). It stops after --seconds (0: when killed, SIGTERM or
SIGINT), deletes its keys, and prints every --report seconds the calls it made and the share of
one core Redis spent over that span (INFO cpu, user + system, against the wall clock).
"""

import argparse
import os
import signal
import threading
import time

import redis

from luapoll import open_sale, place_line, status_keys

PREFIX = "fill:{f}:"
# A loop of ARGV[1] additions: Redis time without memory or reply (about 0.01 µs a turn).
SPIN = "local x = 0 for i = 1, tonumber(ARGV[1]) do x = x + i end return 0"
KEYS = status_keys(PREFIX)
# ARGV[1] of wr_status.lua: the return grace in ms; the users follow.
GRACE_MS = 120_000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--script", help="wr_status.lua's body (lua-body wr_status): real status calls")
    ap.add_argument("--call-us", type=float, default=150, help="Redis µs a spin call (no --script)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int, default=6, help="connections, one call in flight each")
    ap.add_argument("--batch", type=int, default=32, help="polls a call")
    ap.add_argument("--line", type=int, default=200_000, help="waiting places of the filler's sale")
    ap.add_argument("--seconds", type=float, default=0, help="0: until killed")
    ap.add_argument("--report", type=float, default=10)
    a = ap.parse_args()
    if a.port == 6379:
        raise SystemExit("redis-fill: refusing the shared Redis (6379); give it a private one")

    r = redis.Redis(port=a.port)
    if a.script:
        call = status_calls(r, a)
        what = f"status calls of {a.batch} polls"
    else:
        call, turns = spin_calls(r, a.call_us)
        what = f"spin calls of {a.call_us:.0f} us ({turns} turns)"

    stop = threading.Event()
    calls = [0] * a.threads
    errors = []

    def work(t):
        c = redis.Redis(port=a.port)
        try:
            for _ in call(c, t):
                if stop.is_set():
                    break
                calls[t] += 1
        except redis.RedisError as e:
            errors.append(f"thread {t}: {e}")
            stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(a.threads)]
    for t in threads:
        t.start()

    def cpu():
        c = r.info("cpu")
        return c["used_cpu_user"] + c["used_cpu_sys"]

    started = time.monotonic()
    last_t, last_cpu, last_calls = started, cpu(), 0
    print(f"redis-fill: {a.threads} connections of {what} on port {a.port}", flush=True)
    while not stop.wait(a.report):
        if a.seconds and time.monotonic() - started >= a.seconds:
            break
        now, c, n = time.monotonic(), cpu(), sum(calls)
        print(f"redis-fill: {n - last_calls} calls ({(n - last_calls) / (now - last_t):.0f}/s), "
              f"Redis busy {(c - last_cpu) / (now - last_t):.2f} of a core", flush=True)
        last_t, last_cpu, last_calls = now, c, n
    stop.set()
    for t in threads:
        t.join(timeout=5)
    try:
        r.delete(*KEYS)
    except redis.RedisError:
        pass  # the server may be going away with the run; its keys go with it
    print(f"redis-fill: stopped after {time.monotonic() - started:.0f} s, {sum(calls)} calls",
          flush=True)
    if errors:
        raise SystemExit("redis-fill: " + "; ".join(errors))


def status_calls(r, a):
    """Sets up the filler's sale and line; returns call(client, thread), a generator of
    wr_status.lua calls. Each thread walks its own stride of the line, so no two calls carry the
    same user."""
    if a.line < a.batch * a.threads:
        raise SystemExit("redis-fill: --line must hold --batch users for every thread")
    sha = r.script_load(open(a.script).read())
    sec, usec = r.time()
    open_sale(r, PREFIX, sec * 1000 + usec // 1000)
    users = [os.urandom(16) for _ in range(a.line)]
    place_line(r, PREFIX + "q", users, sec - 3)
    reply = r.evalsha(sha, len(KEYS), *KEYS, GRACE_MS, users[0])
    if not isinstance(reply, list) or reply[0] == b"not_found":
        raise SystemExit(f"redis-fill: the status script's set-up is wrong: {reply!r}")

    def call(c, t):
        off, step = t * a.batch, a.batch * a.threads
        while True:
            if off + a.batch > len(users):
                off = t * a.batch
            yield c.evalsha(sha, len(KEYS), *KEYS, GRACE_MS, *users[off:off + a.batch])
            off += step
    return call


def spin_calls(r, call_us):
    """Sizes the spin loop to call_us of Redis time (its script time in INFO commandstats, over
    200 calls); returns (call(client, thread), the loop's turns)."""
    sha = r.script_load(SPIN)
    turns = 10_000
    for _ in range(3):
        before = r.info("commandstats").get("cmdstat_evalsha", {"usec": 0, "calls": 0})
        for _ in range(200):
            r.evalsha(sha, 0, turns)
        after = r.info("commandstats")["cmdstat_evalsha"]
        us = (after["usec"] - before["usec"]) / (after["calls"] - before["calls"])
        turns = max(1, int(turns * call_us / max(us, 0.1)))

    def call(c, _t):
        while True:
            yield c.evalsha(sha, 0, turns)
    return call, turns


if __name__ == "__main__":
    main()
