#!/usr/bin/env python3
"""The ETA-accuracy figures of a `k6/run eta` run (door.md §3), from its artifacts.

Reads <dir>/console.log (one `eta-buyer {json}` line per admitted buyer, from k6/eta.js),
<dir>/summary.json (k6's, for the client's lateness) and <dir>/machine.txt (load samples taken
during the run, if any); writes <dir>/buyers.jsonl, <dir>/eta.json and <dir>/eta.md (the
figures as BENCHMARKS.md shows them) and prints eta.md. Exit status 1 when the records are
missing (the k6 threshold judges the share itself).

A buyer's record: n (arrival index), off (planned arrival, ms after the start), m (1: joined
after the warm-up, measured), p (position in the join's answer), e (E: first non-null
eta_seconds shown, or null), ep (the position shown with E), ea (ms after the join's answer
when E was shown), w (W: ms from the join's answer to the first `admitted` answer), k (answers),
late (the buyer's worst lateness of a request against its due time, ms).
"""

import argparse
import json
import os
import sys


def quantile(values, q):
    """Linear interpolation between closest ranks (as k6's trends)."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def within(record):
    e = record["e"]
    if e is None:
        return False
    return abs(record["w"] - e * 1000) <= 0.2 * e * 1000 + 2000


def trend(summary, name):
    return summary.get("metrics", {}).get(name, {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--warmup", type=float, required=True)
    ap.add_argument("--admit", type=int, required=True)
    ap.add_argument("--max-active", type=int, default=0)
    ap.add_argument("--leave-after", type=float, default=0)
    ap.add_argument("--smoke", type=int, default=0)
    ap.add_argument("--profile", default="release")
    a = ap.parse_args()

    records, other = [], []
    console = os.path.join(a.dir, "console.log")
    if os.path.exists(console):
        for line in open(console, encoding="utf-8", errors="replace"):
            if line.startswith("eta-buyer "):
                records.append(json.loads(line[len("eta-buyer "):]))
            elif line.strip():
                other.append(line.rstrip("\n"))
    with open(os.path.join(a.dir, "buyers.jsonl"), "w") as f:
        for r in sorted(records, key=lambda r: r["n"]):
            f.write(json.dumps(r) + "\n")
    if other:
        print(f"[dropline] k6 eta: {len(other)} other console line(s), e.g.:", file=sys.stderr)
        for line in other[:5]:
            print(f"  {line}", file=sys.stderr)

    planned = round(a.rate * a.duration)
    measured = [r for r in records if r["m"]]
    shown = [r for r in measured if r["e"] is not None]
    ok = [r for r in measured if within(r)]
    rel = [abs(r["w"] - r["e"] * 1000) / (r["e"] * 1000) for r in shown if r["e"] > 0]
    signed = [(r["w"] - r["e"] * 1000) / (r["e"] * 1000) for r in shown if r["e"] > 0]
    waits = [r["w"] / 1000 for r in measured]
    etas = [r["e"] for r in shown]

    # The measured buyers by arrival time, in tenths of the measured span: where it holds.
    buckets = []
    if measured:
        span = (a.duration - a.warmup) * 1000
        step = max(span / 6, 1)
        for i in range(6):
            lo, hi = a.warmup * 1000 + i * step, a.warmup * 1000 + (i + 1) * step
            rs = [r for r in measured if lo <= r["off"] < hi or (i == 5 and r["off"] >= hi)]
            if not rs:
                continue
            sg = [(r["w"] - r["e"] * 1000) / (r["e"] * 1000) for r in rs if r["e"]]
            buckets.append({
                "joined_s": [round(lo / 1000, 1), round(hi / 1000, 1)],
                "buyers": len(rs),
                "share_within": round(sum(within(r) for r in rs) / len(rs), 4),
                "median_E_s": quantile([r["e"] for r in rs if r["e"] is not None], 0.5),
                "median_W_s": round(quantile([r["w"] / 1000 for r in rs], 0.5), 2),
                "median_signed_error": None if not sg else round(quantile(sg, 0.5), 4),
            })

    summary = {}
    spath = os.path.join(a.dir, "summary.json")
    if os.path.exists(spath):
        summary = json.load(open(spath))
    late = {}
    for key, name in [("all", "client_lateness"), ("join", "client_lateness{what:join}"),
                      ("status", "client_lateness{what:status}"),
                      ("leave", "client_lateness{what:leave}"), ("answer_lag", "answer_lag")]:
        t = trend(summary, name)
        if t:
            late[key] = {k: t.get(k) for k in ["med", "p(99)", "max"]}

    load = []
    mpath = os.path.join(a.dir, "machine.txt")
    if os.path.exists(mpath):
        for line in open(mpath):
            parts = line.split()
            if len(parts) >= 5 and parts[3].count("/") == 1:  # /proc/loadavg
                try:
                    load.append(float(parts[0]))
                except ValueError:
                    pass

    out = {
        "case": a.case,
        "smoke": bool(a.smoke),
        "profile": a.profile,
        "admit_per_second": a.admit,
        "max_active": a.max_active or None,
        "leave_after_s": a.leave_after or None,
        "joins_per_second": a.rate,
        "duration_s": a.duration,
        "warmup_s": a.warmup,
        "buyers_planned": planned,
        "buyers_admitted": len(records),
        "buyers_measured": len(measured),
        "never_shown_an_eta": len(measured) - len(shown),
        "share_within_bound": None if not measured else round(len(ok) / len(measured), 4),
        "abs_error_ratio": {"median": quantile(rel, 0.5), "p90": quantile(rel, 0.9)},
        "signed_error_ratio": {"median": quantile(signed, 0.5), "p10": quantile(signed, 0.1),
                               "p90": quantile(signed, 0.9)},
        "W_s": {"p50": quantile(waits, 0.5), "p90": quantile(waits, 0.9), "max": max(waits, default=None)},
        "E_s": {"p50": quantile(etas, 0.5), "p90": quantile(etas, 0.9), "max": max(etas, default=None)},
        "by_arrival": buckets,
        "client_lateness_ms": late,
        "loadavg_1m": {"max": max(load, default=None),
                       "mean": None if not load else round(sum(load) / len(load), 2)},
    }
    json.dump(out, open(os.path.join(a.dir, "eta.json"), "w"), indent=2)

    def f(x, fmt="{:.2f}"):
        return "–" if x is None else fmt.format(x)

    def lat(key):
        v = late.get(key)
        if not v:
            return "–"
        return f"p99 {f(v['p(99)'], '{:.0f}')} ms, max {f(v['max'], '{:.0f}')} ms"

    what = (f"R={a.admit}" + (f", max_active {a.max_active}" if a.max_active else "")
            + (f", leave {a.leave_after:g} s after admission" if a.leave_after else "")
            + f", {a.rate:g} joins/s for {a.duration:g} s, measured after {a.warmup:g} s")
    lines = [
        f"| case | {a.case}{' (smoke)' if a.smoke else ''}: {what} |",
        "| --- | --- |",
        f"| buyers admitted / planned | {len(records):,} / {planned:,} |",
        f"| buyers measured (joined after the warm-up) | {len(measured):,}"
        + (f" ({len(measured) - len(shown)} never shown an ETA)" if len(measured) != len(shown) else "") + " |",
        f"| share with \\|W − E\\| ≤ 0.2·E + 2 s (goal ≥ 90%) | **{f(None if not measured else 100 * len(ok) / len(measured), '{:.1f}')}%** |",
        f"| \\|W − E\\| / E, median / p90 | {f(out['abs_error_ratio']['median'], '{:.3f}')} / {f(out['abs_error_ratio']['p90'], '{:.3f}')} |",
        f"| (W − E) / E, p10 / median / p90 | {f(out['signed_error_ratio']['p10'], '{:+.3f}')} / {f(out['signed_error_ratio']['median'], '{:+.3f}')} / {f(out['signed_error_ratio']['p90'], '{:+.3f}')} |",
        f"| W, p50 / p90 | {f(out['W_s']['p50'], '{:.1f}')} s / {f(out['W_s']['p90'], '{:.1f}')} s |",
        f"| E, p50 / p90 | {f(out['E_s']['p50'], '{:.0f}')} s / {f(out['E_s']['p90'], '{:.0f}')} s |",
        f"| client lateness, polls | {lat('status')} |",
        f"| client lateness, joins / leaves | {lat('join')} / {lat('leave')} |",
        f"| answer lag in the client (response complete → script) | {lat('answer_lag')} |",
        f"| load average (1 min) during the run, mean / max | {f(out['loadavg_1m']['mean'])} / {f(out['loadavg_1m']['max'])} |",
    ]
    if buckets:
        lines += ["", "| joined (s) | buyers | within bound | median E | median W | median (W − E) / E |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for b in buckets:
            lines.append(f"| {b['joined_s'][0]:g}–{b['joined_s'][1]:g} | {b['buyers']} | {100 * b['share_within']:.1f}% "
                         f"| {f(b['median_E_s'], '{:.0f}')} s | {b['median_W_s']:.1f} s | {f(b['median_signed_error'], '{:+.3f}')} |")
    text = "\n".join(lines) + "\n"
    open(os.path.join(a.dir, "eta.md"), "w").write(text)
    print(text)
    if not records:
        print(f"[dropline] k6 eta: no buyer records in {console}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
