#!/usr/bin/env python3
"""The draw scenario's check from outside, after k6 (k6/run draw runs it).

    draw_check.py --api URL --waitroom URL --sale ID --stock N --entrants N --out DIR

Reads the sale (GET /api/sales/{id}, /stock), the draw (GET /w/{id}/draw), every page of the
winners list (GET /w/{id}/draw/winners) and MySQL (orders, draw_entries; DROPLINE_MYSQL__URL's
database, through the `mysql` client), waiting up to --settle seconds for the draw to be over
and its outbox to reach MySQL, then checks:

  - not oversold: paid units (MySQL) <= stock, and the stock endpoint's `sold` <= stock;
  - every paid order is a winner's: its account's entry was promoted, with outcome `claimed`
    and that order's id, and the order is within the win's max_quantity;
  - no account with two wins (or two paid orders), no entry id twice in the winners list;
  - the winners list is ranks 1..M in order, M = the sale's `draw.promoted`, each rank the
    one MySQL holds for that entry, none still `claiming`;
  - the entry count is the number of entrants k6 entered.

Writes draw.json (the figures) in --out and prints them. Exit 0 when all hold, 1 when one does
not (each said on stderr), 2 when the sale cannot be read or the draw never settled.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def mysql(sql):
    """Rows of a query (tab-separated fields) on DROPLINE_MYSQL__URL's database."""
    url = urllib.parse.urlparse(os.environ["DROPLINE_MYSQL__URL"])
    env = dict(os.environ)
    if url.password:
        env["MYSQL_PWD"] = urllib.parse.unquote(url.password)
    cmd = ["mysql", "--protocol=tcp", "--connect-timeout=5", "-h", url.hostname or "127.0.0.1",
           "-P", str(url.port or 3306), "-u", urllib.parse.unquote(url.username or "root"),
           "-N", "-B", url.path.lstrip("/"), "-e", sql]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def winners(base, sale):
    items, cursor, pages = [], None, 0
    while True:
        query = "" if cursor is None else "?cursor=" + urllib.parse.quote(cursor)
        page = get(f"{base}/w/{sale}/draw/winners{query}")
        items.extend(page["items"])
        pages += 1
        cursor = page.get("next_cursor")
        if cursor is None:
            return items, pages


def gather(args):
    sale_hex = args.sale.replace("-", "")
    where = f"sale_id = UNHEX('{sale_hex}')"
    view = get(f"{args.api}/api/sales/{args.sale}")
    stock = get(f"{args.api}/api/sales/{args.sale}/stock")
    draw = get(f"{args.waitroom}/w/{args.sale}/draw")
    wins, pages = winners(args.waitroom, args.sale)
    orders = mysql(
        "SELECT LOWER(HEX(id)), LOWER(HEX(user_id)), quantity, status FROM orders "
        f"WHERE {where}")
    entries = mysql(
        "SELECT LOWER(HEX(id)), LOWER(HEX(user_id)), IFNULL(draw_rank, ''), won_at IS NOT NULL, "
        "IFNULL(max_quantity, ''), IFNULL(outcome, ''), IFNULL(LOWER(HEX(order_id)), '') "
        f"FROM draw_entries WHERE {where} AND withdrawn_at IS NULL")
    ended = mysql(f"SELECT ended_at IS NOT NULL FROM draws WHERE {where}")
    return {"view": view, "stock": stock, "draw": draw, "winners": wins, "pages": pages,
            "orders": orders, "entries": entries,
            "ended": bool(ended) and ended[0][0] == "1"}


def settled(g):
    """The draw is over and MySQL has followed it: nothing left to wait for."""
    won_rows = [e for e in g["entries"] if e[3] == "1"]
    return (g["view"].get("state") in ("sold_out", "closed") and g["ended"]
            and all(w["outcome"] != "claiming" for w in g["winners"])
            and all(e[5] in ("claimed", "forfeited") for e in won_rows)
            and len(won_rows) == len(g["winners"]))


def check(g, args):
    problems = []
    stock_total = args.stock
    orders, entries, wins = g["orders"], g["entries"], g["winners"]
    paid = [o for o in orders if o[3] == "paid"]
    paid_units = sum(int(o[2]) for o in paid)
    sold = g["stock"].get("sold")
    if paid_units > stock_total:
        problems.append(f"oversold: {paid_units} units paid, stock {stock_total}")
    if not isinstance(sold, int) or sold > stock_total:
        problems.append(f"oversold: GET /api/sales/{{id}}/stock says sold {sold!r}, stock {stock_total}")

    by_user = {e[1]: e for e in entries}
    for oid, user, qty, _ in paid:
        e = by_user.get(user)
        if e is None or e[3] != "1":
            problems.append(f"paid order {oid} is not a winner's (account {user})")
        elif e[5] != "claimed" or e[6] != oid:
            problems.append(f"paid order {oid}: its account's win reads outcome {e[5]!r}, order {e[6]!r}")
        elif int(qty) > int(e[4] or 0):
            problems.append(f"paid order {oid}: {qty} units over the win's max_quantity {e[4]}")
    paid_users = [o[1] for o in paid]
    if len(set(paid_users)) != len(paid_users):
        problems.append("an account has two paid orders")
    won_rows = [e for e in entries if e[3] == "1"]
    won_users = [e[1] for e in won_rows]
    if len(set(won_users)) != len(won_users):
        problems.append("an account has two wins")
    if len({e[1] for e in entries}) != len(entries):
        problems.append("an account has two entries")

    ranks = [w["rank"] for w in wins]
    promoted = (g["view"].get("draw") or {}).get("promoted")
    if ranks != list(range(1, len(ranks) + 1)):
        problems.append(f"the winners list is not ranks 1..M in order: {ranks[:20]}...")
    if promoted != len(ranks):
        problems.append(f"the sale says promoted {promoted!r}, the winners list has {len(ranks)}")
    if len({w["entry_id"] for w in wins}) != len(wins):
        problems.append("an entry id appears twice in the winners list")
    rank_of = {e[0]: e[2] for e in entries}
    for w in wins:
        if str(rank_of.get(w["entry_id"])) != str(w["rank"]):
            problems.append(f"winner {w['entry_id']} listed at rank {w['rank']}, MySQL has {rank_of.get(w['entry_id'])!r}")
            break
    if len(won_rows) != len(wins):
        problems.append(f"MySQL has {len(won_rows)} wins, the winners list {len(wins)}")
    claimed = sum(1 for w in wins if w["outcome"] == "claimed")
    if claimed != len(paid):
        problems.append(f"{claimed} wins claimed but {len(paid)} orders paid")
    if len(entries) != args.entrants or g["draw"].get("entry_count") != args.entrants:
        problems.append(f"{args.entrants} entrants entered; MySQL has {len(entries)} entries, "
                        f"the draw's entry_count is {g['draw'].get('entry_count')!r}")
    figures = {
        "sale": args.sale, "state": g["view"].get("state"), "stock": stock_total,
        "entrants": len(entries), "entry_count": g["draw"].get("entry_count"),
        "promoted": len(wins), "claimed": claimed,
        "forfeited": sum(1 for w in wins if w["outcome"] == "forfeited"),
        "paid_orders": len(paid), "paid_units": paid_units, "sold": sold,
        "orders": len(orders), "winners_pages": g["pages"],
    }
    return problems, figures


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", required=True)
    p.add_argument("--waitroom", required=True)
    p.add_argument("--sale", required=True)
    p.add_argument("--stock", type=int, required=True)
    p.add_argument("--entrants", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--settle", type=float, default=60.0)
    args = p.parse_args()
    args.api, args.waitroom = args.api.rstrip("/"), args.waitroom.rstrip("/")
    deadline = time.monotonic() + args.settle
    while True:
        try:
            g = gather(args)
        except (urllib.error.URLError, OSError, subprocess.CalledProcessError, KeyError,
                ValueError) as err:
            print(f"draw check: cannot read the sale: {err}", file=sys.stderr)
            return 2
        if settled(g):
            break
        if time.monotonic() > deadline:
            print(f"draw check: the draw did not settle within {args.settle:.0f} s (sale "
                  f"{g['view'].get('state')}, draws.ended_at {'set' if g['ended'] else 'null'}, "
                  f"outcomes {sorted({w['outcome'] for w in g['winners']})})", file=sys.stderr)
            return 2
        time.sleep(1)
    problems, figures = check(g, args)
    figures["passed"] = not problems
    figures["problems"] = problems
    with open(os.path.join(args.out, "draw.json"), "w") as f:
        json.dump(figures, f, indent=2)
    print("[dropline] k6 draw: " + ", ".join(
        f"{k} {v}" for k, v in figures.items() if k not in ("problems", "passed", "sale")))
    for problem in problems:
        print(f"draw check: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
