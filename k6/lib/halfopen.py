#!/usr/bin/env python3
"""Holds half-sent HTTP requests open against Dropline, beside a k6 run (k6 cannot send half a
request).

    python3 k6/lib/halfopen.py --target 127.0.0.1:8080 --target 127.0.0.1:8081 \
        --connections 100 --seconds 40 [--report FILE]

For every target it opens --connections TCP connections, sends the first half of a request's
headers on each (a request line and a few header lines, never the blank line that ends them),
and holds them. The server is expected to cut such a connection once
`http.header_read_timeout_seconds` (default 10) have passed since its first byte; every cut
connection is reopened at once, so the pressure stays constant for --seconds. On SIGTERM,
SIGINT or after --seconds it closes everything and prints one JSON line (and writes it to
--report): per target and in total, connections opened, closed by the server (and how long the
server let them live), answered (the server sent bytes, e.g. a 503 at its connection cap),
refused or failed to connect, and still open at the end (closed by us).

Bounded on purpose: loopback targets only (a name must resolve to 127.0.0.0/8 or ::1), at most
1,000 connections per target and 4 targets, at most 600 seconds, at most 100 reopens a second
per target. Python 3 standard library only.
"""

import argparse
import ipaddress
import json
import selectors
import signal
import socket
import statistics
import sys
import time

MAX_CONNECTIONS = 1000
MAX_TARGETS = 4
MAX_SECONDS = 600
MAX_REOPENS_PER_SECOND = 100

# The first half of a request's headers: no blank line, so the request never ends.
HALF_REQUEST = (
    b"POST /api/orders HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"User-Agent: dropline-halfopen\r\n"
    b"Content-Type: application/js"
)


def loopback_target(text):
    """host:port -> (family, sockaddr, label); refuses anything that is not loopback."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text}: expected host:port")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: {e}") from e
    if not infos:
        raise argparse.ArgumentTypeError(f"{text}: does not resolve")
    for family, _, _, _, sockaddr in infos:
        if not ipaddress.ip_address(sockaddr[0]).is_loopback:
            raise argparse.ArgumentTypeError(
                f"{text}: resolves to {sockaddr[0]}, not a loopback address (refused)"
            )
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr, text


class Target:
    def __init__(self, family, sockaddr, label):
        self.family, self.sockaddr, self.label = family, sockaddr, label
        self.opened = 0
        self.closed_by_server = 0
        self.answered = 0
        self.connect_failed = 0
        self.lifetimes = []
        self.reopen_budget = MAX_REOPENS_PER_SECOND
        self.budget_second = int(time.monotonic())

    def may_open(self, now):
        second = int(now)
        if second != self.budget_second:
            self.budget_second, self.reopen_budget = second, MAX_REOPENS_PER_SECOND
        return self.reopen_budget > 0

    def report(self, still_open):
        lives = sorted(self.lifetimes)
        out = {
            "target": self.label,
            "opened": self.opened,
            "closed_by_server": self.closed_by_server,
            "answered_before_close": self.answered,
            "connect_failed": self.connect_failed,
            "open_at_end": still_open,
        }
        if lives:
            out["server_cut_after_s"] = {
                "min": round(lives[0], 2),
                "median": round(statistics.median(lives), 2),
                "max": round(lives[-1], 2),
            }
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", type=loopback_target, required=True,
                        help="host:port on loopback (repeat for several)")
    parser.add_argument("--connections", type=int, default=100,
                        help=f"connections held per target (1..{MAX_CONNECTIONS})")
    parser.add_argument("--seconds", type=float, default=30,
                        help=f"how long to hold them (up to {MAX_SECONDS})")
    parser.add_argument("--report", help="also write the JSON report to this file")
    args = parser.parse_args()
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 1..{MAX_CONNECTIONS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if len(args.target) > MAX_TARGETS:
        parser.error(f"at most {MAX_TARGETS} targets")

    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    targets = [Target(*t) for t in args.target]
    sel = selectors.DefaultSelector()
    # socket -> (target, opened at, answered yet)
    live = {}

    def open_one(target, now):
        target.reopen_budget -= 1
        s = socket.socket(target.family, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(target.sockaddr)
            s.sendall(HALF_REQUEST)
        except OSError:
            target.connect_failed += 1
            s.close()
            return
        s.setblocking(False)
        target.opened += 1
        live[s] = [target, now, False]
        sel.register(s, selectors.EVENT_READ)

    started = time.monotonic()
    deadline = started + args.seconds
    while not stop:
        now = time.monotonic()
        if now >= deadline:
            break
        # Top every target up to --connections (bounded reopens per second).
        for target in targets:
            held = sum(1 for t, _, _ in live.values() if t is target)
            while held < args.connections and target.may_open(now) and not stop:
                open_one(target, now)
                held += 1
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            entry = live[s]
            try:
                data = s.recv(4096)
            except (ConnectionResetError, OSError):
                data = b""
            if data:
                entry[2] = True  # the server answered (a 503 at the cap, a 408...): keep reading
                continue
            target, opened_at, answered = entry
            target.closed_by_server += 1
            target.answered += int(answered)
            target.lifetimes.append(time.monotonic() - opened_at)
            sel.unregister(s)
            s.close()
            del live[s]

    reports = []
    for target in targets:
        still = sum(1 for t, _, _ in live.values() if t is target)
        reports.append(target.report(still))
    for s in list(live):
        sel.unregister(s)
        s.close()
    total = {
        key: sum(r[key] for r in reports)
        for key in ("opened", "closed_by_server", "answered_before_close", "connect_failed", "open_at_end")
    }
    result = {
        "half_open": {
            "connections_per_target": args.connections,
            "held_seconds": round(time.monotonic() - started, 1),
            "total": total,
            "targets": reports,
        }
    }
    line = json.dumps(result)
    print(line, flush=True)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
