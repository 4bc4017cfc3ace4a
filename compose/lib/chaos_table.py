#!/usr/bin/env python3
"""The Markdown table of a compose/chaos series: results.tsv plus figures read from each run's
output (orders by end state, mails and duplicates, the admitter takeover, RabbitMQ's and
MariaDB's downtime, what the k6 buyers saw).

    python3 compose/lib/chaos_table.py artifacts/chaos > artifacts/chaos/results.md
"""
import glob
import json
import os
import re
import sys


def seconds(t):
    h, m, s = t.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def takeover(run_dir, chaos):
    """`waitroom-A → waitroom-B in N s`: the killed leader, the next holder, time from the kill."""
    m = re.search(r"(\d\d:\d\d:\d\d\.\d+) \+\s*[\d.]+s kill -9 (waitroom-\d) \(pid \d+\)", chaos)
    if not m:
        return "-"
    killed_at, name = m.groups()
    gained = []
    for path in glob.glob(f"{run_dir}/logs/waitroom-*.log"):
        with open(path, errors="replace") as f:
            for line in f:
                if "admitter leadership gained" not in line:
                    continue
                try:
                    ts = json.loads(line)["timestamp"][11:23]
                except (ValueError, KeyError):
                    continue
                if ts > killed_at:
                    gained.append((ts, os.path.basename(path)[:-4]))
    if not gained:
        return f"{name} → none"
    ts, who = min(gained)
    return f"{name} → {who} in {seconds(ts) - seconds(killed_at):.1f} s"


def mails(run_dir):
    """Mails in the sink, and how many were a second copy (same Message-ID)."""
    ids = {}
    paths = glob.glob(f"{run_dir}/mail/*.eml")
    for path in paths:
        with open(path, errors="replace") as f:
            for line in f:
                if line.lower().startswith("message-id:"):
                    key = line.split(":", 1)[1].strip()
                    ids[key] = ids.get(key, 0) + 1
                    break
    return len(paths), sum(n - 1 for n in ids.values() if n > 1)


def main():
    root = sys.argv[1]
    with open(f"{root}/results.tsv") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    print("| run | ended (UTC) | oversold | lost | charged twice | audit `--settled` | paid / stock "
          "| orders (expired / failed) | refunds | parked | mails (dup) | leader killed → new lease "
          "| RabbitMQ down | MariaDB down | buyers: retried / gave up | duration (s) | verdict |")
    print("| --- " * 17 + "|")
    for r in rows:
        n = int(r[0])
        run_dir = f"{root}/run-{n:02d}"
        try:
            with open(f"{run_dir}/verdict.json") as f:
                v = json.load(f)
        except (OSError, ValueError):
            v = None
        chaos = ""
        if os.path.exists(f"{run_dir}/chaos.log"):
            with open(f"{run_dir}/chaos.log") as f:
                chaos = f.read()
        k6 = ""
        if os.path.exists(f"{run_dir}/k6.txt"):
            with open(f"{run_dir}/k6.txt", errors="replace") as f:
                k6 = f.read()

        def counter(name):
            m = re.search(name + r"\.*: (\d+)", k6)
            return m.group(1) if m else "0"

        down = re.search(r"RabbitMQ up again \((\d+) s after stop_app\)", chaos)
        mdown = re.search(r"MariaDB up again \((\d+) s after kill -9\)", chaos)
        sent, dup = mails(run_dir)
        orders = "-"
        if v:
            orders = f"{v['orders']} ({v['states']['expired']} / {v['states']['failed']})"
        audit = f"exit {r[5]}" if r[5] != "-" else "-"
        print(f"| {n} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {audit} | {r[6]} / {r[7]} | {orders} "
              f"| {r[8]} | {r[9]} | {sent} ({dup}) | {takeover(run_dir, chaos)} "
              f"| {down.group(1) + ' s' if down else '-'} "
              f"| {mdown.group(1) + ' s' if mdown else '-'} "
              f"| {counter('requests_retried')} / {counter('buyers_gave_up')} | {r[11]} | {r[12]} |")
    failover_table(root, rows)


def failover_table(root, rows):
    """compose/chaos --failover: the Jepsen-style counts (compose/lib/chaos_money.py) per run."""
    runs = []
    for r in rows:
        n = int(r[0])
        run_dir = f"{root}/run-{n:02d}"
        try:
            with open(f"{run_dir}/jepsen.json") as f:
                j = json.load(f)
        except (OSError, ValueError):
            continue
        chaos = open(f"{run_dir}/chaos.log").read() if os.path.exists(f"{run_dir}/chaos.log") else ""
        event = "-"
        m = re.search(r"promoted after ([\d.]+) s \(unreplicated at the kill: (\S+) bytes\)", chaos)
        if m:
            event = (f"Redis primary killed, replica promoted in {m.group(1)} s "
                     f"({m.group(2)} B unacknowledged")
            lost = re.search(r"Redis promotion lost (\S+) bytes .*cut off (\d+) ms", chaos)
            event += (f", {lost.group(1)} B lost, replica cut off {lost.group(2)} ms before)"
                      if lost else ")")
        m = re.search(r"kill -9 RabbitMQ node (\d) \(\S+; leader of (\d+) queue", chaos)
        back = re.search(r"RabbitMQ node \d back in the cluster \((\d+) s", chaos)
        if m:
            event = (f"RabbitMQ node {m.group(1)} killed (leader of {m.group(2)} queues), "
                     f"back in {back.group(1) + ' s' if back else '?'}")
        repaired = "yes" if "repair: dropline sale rearm" in chaos else "no"
        rc = "-"
        if os.path.exists(f"{run_dir}/reconcile.rc"):
            rc = "exit " + open(f"{run_dir}/reconcile.rc").read().strip()
        runs.append(f"| {n} | {event} | {j['acknowledged']} | {j['lost']} | {j['duplicated']} "
                    f"| {j['unexpected']} | {j['recovered']} | {j['approved']} | {j['paid']} "
                    f"| {j['refunds']} | {j['unaccounted']} | {rc} | {repaired} |")
    if not runs:
        return
    print()
    print("| run | failover | orders acknowledged | lost | duplicated | unexpected | recovered "
          "| charges approved | orders paid | refunds | charges unaccounted for "
          "| `payments reconcile` | Redis repaired (`sale rearm`) |")
    print("| --- " * 13 + "|")
    for line in runs:
        print(line)


if __name__ == "__main__":
    main()
