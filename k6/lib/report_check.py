#!/usr/bin/env python3
"""Checks a sale's post-sale report against what the k6 buyers saw (issue #24).

Reads <dir>/console.log (one `report-buyer {json}` line per buyer, from reportBuyer in
k6/lib/buyer.js) and the sale's report (`dropline sale report <sale> --json`, which reads the
MySQL copy the expiry worker makes every few seconds), while the system still runs. Then:

- joined, admitted and paid must be equal, exactly: the report's funnel against the number of
  buyers whose join made a place (answered 200 with a state other than `sold_out` or `closed`:
  a join after the sell-out is told so at the door and gets no place), who were shown a pass,
  whose order reached `paid`
  (`time_in_line.count`, the admitted buyers with a time in line, too);
- time in line p50, p90 and p99 within 10 % of the buyers' own. A buyer's time in line is, as
  the report defines it, from joining (or the opening, for earlier arrivals) to admission. The
  buyer knows its admission to the millisecond: the pass's `pass_expires_at` is the admission
  plus the admission window (every replica signs the same deadline, DESIGN "Pass"). It knows
  its join to within the join's round trip: the middle of the request is taken, and a rank's
  tolerance is 10 % or, if larger, half that buyer's round trip (zero for a buyer who joined
  before the opening: its wait starts at `opens_at`, which the join answer names), and never
  under 2 ms (the report's first bucket holds every wait under 1 ms).
  Percentiles are nearest-rank on both sides; the report's are read from its histogram
  (within 2.5 %, see audit/src/sale_report.rs).
- no buyer was admitted before its join was sent (a pass that predates the join would mean the
  report and the pass disagree about one buyer's admission).

The report's copy may lag: it is read every second until it has caught up with the buyers'
counts (or 60 s pass), then once more after the next copy, so that a count still rising is not
taken for a match. Writes <dir>/report-check.json; exit 1 on a mismatch, 2 on bad input.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime

RECORD = "report-buyer "
# The expiry worker copies every 5 s (workers/src/expiry.rs); one more copy after catching up.
COPY_PERIOD_S = 6
CATCH_UP_S = 60
RELATIVE = 0.10
# The report's first bucket holds every wait under 1 ms: below that, 10 % is not resolvable.
RESOLUTION_S = 0.002


def epoch_ms(text):
    """An RFC 3339 time (as the API writes them, `Z` or an offset) in epoch ms."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000.0


def nearest_rank(sorted_values, q):
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def load_records(path):
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(RECORD):
                records.append(json.loads(line[len(RECORD):]))
    return records


def read_report(dropline, sale):
    out = subprocess.run(
        [dropline, "sale", "report", sale, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def caught_up(report, want):
    funnel = report["funnel"]
    return (
        funnel["joined"] >= want["joined"]
        and funnel["admitted"] >= want["admitted"]
        and funnel["paid"] >= want["paid"]
        and report["time_in_line"]["count"] >= want["admitted"]
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="the run's artifacts (console.log in it)")
    p.add_argument("--sale", required=True)
    p.add_argument("--dropline", required=True, help="the dropline binary (config from env)")
    p.add_argument("--window-seconds", type=int, default=600,
                   help="waitroom.admission_window_seconds of the run")
    a = p.parse_args()

    console = os.path.join(a.dir, "console.log")
    if not os.path.exists(console):
        print(f"report check: no {console}", file=sys.stderr)
        return 2
    records = load_records(console)
    if not records:
        print("report check: no report-buyer records in the console log", file=sys.stderr)
        return 2

    window_ms = a.window_seconds * 1000.0
    waits = []  # (wait ms, tolerance ms from the buyer's side)
    early = []
    for r in records:
        if not r["admitted"]:
            continue
        admitted_at = epoch_ms(r["pass_expires_at"]) - window_ms
        opens_at = epoch_ms(r["opens_at"])
        sent, answered = r["join_sent"], r["join_answered"]
        if answered <= opens_at:
            start, slack = opens_at, 0.0
        else:
            start, slack = max(opens_at, (sent + answered) / 2.0), (answered - sent) / 2.0
        if admitted_at < sent - 1:
            early.append({"join_sent": sent, "admitted_at": admitted_at})
        waits.append((max(0.0, admitted_at - start), slack))
    waits.sort()

    want = {
        "joined": sum(1 for r in records if r["join_state"] not in ("sold_out", "closed")),
        "admitted": sum(1 for r in records if r["admitted"]),
        "paid": sum(1 for r in records if r["paid"]),
    }

    deadline = time.monotonic() + CATCH_UP_S
    report = read_report(a.dropline, a.sale)
    while not caught_up(report, want) and time.monotonic() < deadline:
        time.sleep(1)
        report = read_report(a.dropline, a.sale)
    # One more copy: a count that goes past the buyers' would show now.
    time.sleep(COPY_PERIOD_S)
    report = read_report(a.dropline, a.sale)

    failures = []
    got = {
        "joined": report["funnel"]["joined"],
        "admitted": report["funnel"]["admitted"],
        "paid": report["funnel"]["paid"],
    }
    for key in ("joined", "admitted", "paid"):
        if got[key] != want[key]:
            failures.append(f"{key}: report {got[key]}, buyers {want[key]}")
    tl = report["time_in_line"]
    if tl["count"] != want["admitted"]:
        failures.append(f"time_in_line.count: report {tl['count']}, admitted buyers {want['admitted']}")
    if early:
        failures.append(f"{len(early)} admission(s) before the join was sent, e.g. {early[0]}")

    percentiles = {}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        mine = nearest_rank(waits, q)
        theirs = tl[name]
        row = {"report_s": theirs, "buyers_s": None if mine is None else mine[0] / 1000.0}
        if mine is None or theirs is None:
            if (mine is None) != (theirs is None):
                failures.append(f"time in line {name}: report {theirs}, buyers {row['buyers_s']}")
        else:
            wait_s, slack_s = mine[0] / 1000.0, mine[1] / 1000.0
            allowed = max(RELATIVE * wait_s, slack_s, RESOLUTION_S)
            row.update({"allowed_s": allowed, "error_s": abs(theirs - wait_s)})
            if abs(theirs - wait_s) > allowed:
                failures.append(
                    f"time in line {name}: report {theirs:.3f} s, buyers {wait_s:.3f} s "
                    f"(allowed ±{allowed:.3f} s)"
                )
        percentiles[name] = row

    out = {
        "buyers": want,
        "report": got,
        "time_in_line": percentiles,
        "time_in_line_count": tl["count"],
        "failures": failures,
    }
    with open(os.path.join(a.dir, "report-check.json"), "w") as f:
        json.dump(out, f, indent=2)
    summary = (
        f"joined {got['joined']}/{want['joined']}, admitted {got['admitted']}/{want['admitted']}, "
        f"paid {got['paid']}/{want['paid']}; time in line (report/buyers) "
        + ", ".join(
            f"{k} {v['report_s']}/{None if v['buyers_s'] is None else round(v['buyers_s'], 3)}"
            for k, v in percentiles.items()
        )
    )
    if failures:
        print(f"[dropline] report check: FAILED: {summary}", file=sys.stderr)
        for failure in failures:
            print(f"[dropline] report check:   {failure}", file=sys.stderr)
        return 1
    print(f"[dropline] report check: the report matches the buyers: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
