#!/usr/bin/env python3
"""compose/chaos --failover: the provider's side and the Jepsen-style counts of one run.

    python3 compose/lib/chaos_money.py fetch RUN_DIR STRIPE_BASE SECRET_KEY
        every PaymentIntent and Refund localstripe holds → RUN_DIR/stripe.json, and
        RUN_DIR/ledger.tsv (`<order>\tapproved:<pi>` or `refunded:<pi>`, the form of the
        simulated provider's ledger that compose/chaos' verdict reads)
    python3 compose/lib/chaos_money.py count RUN_DIR
        RUN_DIR/orders.tsv, payments.tsv, stripe.json and the HIST lines of k6.txt →
        RUN_DIR/jepsen.json, and one line `lost duplicated unexpected recovered approved paid
        refunds unaccounted` on stdout

Orders, as Jepsen counts a queue's messages (an order is "acknowledged" when a buyer got its id):
  lost        acknowledged, then no MySQL row; or the buyer saw it paid and MySQL does not say
              paid; or an approved charge neither paid nor refunded (the money side of it)
  duplicated  a buyer with more than one order; an order with two charges not refunded
  unexpected  a paid order whose buyer never called pay (abandoned, gave up before pay);
              a succeeded intent for an order MySQL lacks
  recovered   a create or pay call whose answer the buyer never got (no answer, 502/503/504,
              retried) that took effect: the order exists / it was paid or its charge refunded
Money: approved = succeeded intents; paid = PAID orders; refunds = intents refunded in full;
unaccounted = approved, not refunded, and the order not PAID (must be 0).
"""
import base64
import json
import re
import sys
import urllib.parse
import urllib.request


def hexid(s):
    return s.replace("-", "").lower()


def listing(base, key, path):
    out, after = [], None
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    while True:
        query = {"limit": "100"}
        if after:
            query["starting_after"] = after
        req = urllib.request.Request(f"{base}{path}?{urllib.parse.urlencode(query)}",
                                     headers={"Authorization": auth})
        with urllib.request.urlopen(req, timeout=30) as r:
            page = json.load(r)
        data = page.get("data") or []
        out.extend(data)
        if not page.get("has_more") or not data:
            return out
        after = data[-1]["id"]


def fetch(run, base, key):
    intents = listing(base, key, "/v1/payment_intents")
    refunds = listing(base, key, "/v1/refunds")
    json.dump({"intents": intents, "refunds": refunds}, open(f"{run}/stripe.json", "w"), indent=1)
    refunded = refunded_by_intent(refunds)
    best = {}
    for pi in intents:
        order = (pi.get("metadata") or {}).get("dropline_order_id")
        if not order or pi.get("status") != "succeeded":
            continue
        state = "refunded" if refunded.get(pi["id"], 0) >= pi["amount"] else "approved"
        # One line per order: an unrefunded charge wins over a refunded one.
        if best.get(hexid(order), ("", ""))[0] != "approved":
            best[hexid(order)] = (state, pi["id"])
    with open(f"{run}/ledger.tsv", "w") as f:
        for order, (state, pi) in sorted(best.items()):
            f.write(f"{order}\t{state}:{pi}\n")


def refunded_by_intent(refunds):
    out = {}
    for r in refunds:
        if r.get("status") in ("succeeded", "pending"):
            out[r["payment_intent"]] = out.get(r["payment_intent"], 0) + r["amount"]
    return out


def rows(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def count(run):
    orders = {r[0]: {"user": r[1], "status": r[2]} for r in rows(f"{run}/orders.tsv")}
    stripe = json.load(open(f"{run}/stripe.json"))
    refunded = refunded_by_intent(stripe["refunds"])
    hist = {}
    with open(f"{run}/k6.txt", errors="replace") as f:
        for line in f:
            m = re.search(r"HIST (n=\S+ order=\S+ create=\S+ pay=\S+ seen=[a-z_]+)", line)
            if m:
                h = dict(kv.split("=", 1) for kv in m.group(1).split())
                hist[hexid(h["order"])] = h
    charges = {}  # order -> [(pi, refunded in full)]
    for pi in stripe["intents"]:
        order = (pi.get("metadata") or {}).get("dropline_order_id")
        if order and pi.get("status") == "succeeded":
            charges.setdefault(hexid(order), []).append(
                (pi["id"], refunded.get(pi["id"], 0) >= pi["amount"]))
    approved = sum(len(c) for c in charges.values())
    refunds = sum(1 for c in charges.values() for _, r in c if r)
    paid = sum(1 for o in orders.values() if o["status"] == "paid")

    lost = []
    for o, h in hist.items():
        if o not in orders:
            lost.append((o, "acknowledged, no MySQL row"))
        elif h["seen"] == "paid" and orders[o]["status"] != "paid":
            lost.append((o, f"buyer saw paid, MySQL says {orders[o]['status']}"))
    unaccounted = [o for o, c in charges.items()
                   if any(not r for _, r in c) and orders.get(o, {}).get("status") != "paid"]
    lost += [(o, "approved charge neither paid nor refunded") for o in unaccounted
             if o not in dict(lost)]
    per_user = {}
    for o in orders.values():
        per_user[o["user"]] = per_user.get(o["user"], 0) + 1
    duplicated = [("user " + u, f"{n} orders") for u, n in per_user.items() if n > 1]
    duplicated += [(o, f"{sum(1 for _, r in c if not r)} charges kept") for o, c in charges.items()
                   if sum(1 for _, r in c if not r) > 1]
    unexpected = [(o, f"paid, buyer's pay was {h['pay']}") for o, h in hist.items()
                  if h["pay"] in ("none", "gave_up") and orders.get(o, {}).get("status") == "paid"]
    unexpected += [(o, "charged, MySQL has no such order") for o in charges if o not in orders]
    recovered = []
    for o, h in hist.items():
        took = o in orders
        if h["create"] == "retried" and took:
            recovered.append((o, "create answered after a retry"))
        elif h["pay"] == "retried" and (orders.get(o, {}).get("status") == "paid" or o in charges):
            recovered.append((o, "pay answered after a retry, and it charged"))
    out = {
        "acknowledged": len(hist),
        "lost": len(lost), "duplicated": len(duplicated), "unexpected": len(unexpected),
        "recovered": len(recovered),
        "approved": approved, "paid": paid, "refunds": refunds, "unaccounted": len(unaccounted),
        "examples": {"lost": lost[:10], "duplicated": duplicated[:10],
                     "unexpected": unexpected[:10], "recovered": recovered[:5]},
    }
    json.dump(out, open(f"{run}/jepsen.json", "w"), indent=1)
    print(out["lost"], out["duplicated"], out["unexpected"], out["recovered"], approved, paid,
          refunds, len(unaccounted))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "fetch":
        fetch(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "count":
        count(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
