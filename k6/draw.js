// k6 scenario `draw`: BUYERS entrants in a draw sale (design/draw.md) of STOCK units,
// per_user_limit 1 and a short claim window (CLAIM_SECONDS, set by k6/run). Every entrant enters
// through the waiting room's own calls (POST /w/{sale}/join -> ticket) while entries are open,
// then polls GET /w/{sale}/status honouring retry_after_ms (plus up to 1 s of jitter): entered -> waitlisted -> won (with a pass) or not_won. A winner orders one unit with the
// pass (POST /api/orders, Dropline-Pass) and pays with the simulated provider (tok_visa), then
// waits for `claimed`; IDLE_PERCENT (30) of the ranks are idle winners who never order, so their
// wins lapse after the claim window (`forfeited`) and pass to the next ranks. Idle ranks are
// spread evenly: rank r is idle when floor(r*IDLE/100) > floor((r-1)*IDLE/100) (30%: ranks 4, 7,
// 10, 14, ...), so the smoke always sees some lapse.
//
// Each VU drives a slice of the entrants (entrant i belongs to VU i mod VUS), joining them all and
// then polling each when it is due: thousands of entrants need no thousand VUs.
//
// Fails (non-zero exit) when: an entrant's join is not `entered`; an entrant never reaches an
// end (claimed, forfeited, not_won); a paying winner does not end `claimed`, an idle one not
// `forfeited`, or a never-promoted entrant anything but `not_won`; a winner is refused an order
// (a win ordered in time never gets sold_out); PAID orders != STOCK; no win lapsed while idle
// ranks were among the first STOCK; any unexpected answer or failed check; join p95 >= 1.5 s,
// status p95 >= 500 ms. k6/run then checks the sale from outside (k6/lib/draw_check.py:
// oversold, orders only winners', one win an account, the winners list ranks 1..M, and
// scripts/draw-verify).
//
// Env: WAITROOM, API (base URLs), SALE (id), STOCK, BUYERS, VUS, IDLE_PERCENT, BUYERS_FILE (lines
// of `user_id<TAB>email<TAB>access_token` from `dropline loadtest seed`), MAX_DURATION.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { loadTokens, placeOrder, payUntilPaid, surprise } from './lib/buyer.js';

const WAITROOM = __ENV.WAITROOM;
const API = __ENV.API;
const SALE = __ENV.SALE;
const STOCK = parseInt(__ENV.STOCK || '10', 10);
const BUYERS = parseInt(__ENV.BUYERS || '5000', 10);
const VUS = Math.max(1, Math.min(parseInt(__ENV.VUS || '100', 10), BUYERS));
const IDLE_PERCENT = parseInt(__ENV.IDLE_PERCENT || '30', 10);

const tokens = loadTokens(__ENV.BUYERS_FILE);
const entered = new Counter('entrants_entered');
const settled = new Counter('entrants_settled');
const winsPaying = new Counter('wins_paying');
const winsIdle = new Counter('wins_idle');
const winsForfeited = new Counter('wins_forfeited');
const notWon = new Counter('entrants_not_won');
const ordersPaid = new Counter('orders_paid');
const wonToPaid = new Trend('won_to_paid', true);

// Idle ranks among the first STOCK: the run must see at least that many lapse.
function idle(rank) {
  return Math.floor((rank * IDLE_PERCENT) / 100) > Math.floor(((rank - 1) * IDLE_PERCENT) / 100);
}
let idleInStock = 0;
for (let r = 1; r <= STOCK; r++) {
  if (idle(r)) {
    idleInStock += 1;
  }
}

export const options = {
  scenarios: {
    entrants: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: __ENV.MAX_DURATION || '10m',
    },
  },
  thresholds: {
    entrants_entered: [`count==${BUYERS}`],
    entrants_settled: [`count==${BUYERS}`],
    orders_paid: [`count==${STOCK}`],
    wins_forfeited: [`count>=${idleInStock}`],
    unexpected_responses: ['count==0'],
    checks: ['rate==1'],
    // A draw's join commits the entry to MySQL before answering.
    'http_req_duration{name:join}': ['p(95)<1500'],
    'http_req_duration{name:status}': ['p(95)<500'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

const HEX32 = /^[0-9a-f]{32}$/;

function join(e) {
  const r = http.post(`${WAITROOM}/w/${SALE}/join`, null, {
    headers: { Authorization: `Bearer ${e.token}` },
    tags: { name: 'join' },
  });
  if (r.status !== 200) {
    return surprise('join', r);
  }
  if (
    !check(r, {
      'join: entered, with an entry id and a ticket': (res) =>
        res.json('state') === 'entered' && HEX32.test(res.json('entry_id')) && !!res.json('ticket'),
    })
  ) {
    return surprise('join', r);
  }
  e.ticket = r.json('ticket');
  e.entry = r.json('entry_id');
  e.next = Date.now() + delay(r.json('retry_after_ms'));
  entered.add(1);
  return true;
}

// The server's delay plus up to 1 s of jitter, in ms (the server already spreads its delays by a
// tenth). More would let a waitlisted entrant (polled every 10-11 s) sleep through a short claim
// window: k6/run keeps CLAIM_SECONDS above the longest gap between polls.
function delay(ms) {
  const base = ms == null ? 1000 : ms;
  return base + Math.random() * 1000;
}

function end(e, what) {
  e.done = true;
  settled.add(1);
  return what;
}

// One status poll of entrant e and what it does about it.
function poll(e) {
  const r = http.get(`${WAITROOM}/w/${SALE}/status`, {
    headers: { Authorization: `Bearer ${e.ticket}` },
    tags: { name: 'status' },
  });
  if (r.status !== 200) {
    e.done = true;
    return surprise('status', r);
  }
  const state = r.json('state');
  const rank = r.json('rank');
  e.next = Date.now() + delay(r.json('retry_after_ms'));
  if (state !== 'entered') {
    check(rank, { 'ranked: rank >= 1': (k) => Number.isInteger(k) && k >= 1 });
    check(rank, { 'ranked: the rank never changes': (k) => e.rank == null || k === e.rank });
    e.rank = rank;
  }
  switch (state) {
    case 'entered':
      return null;
    case 'waitlisted':
      check(r, {
        'waitlisted: never after a win': () => !e.won,
        'waitlisted: a position >= 1': (res) => Number.isInteger(res.json('position')) && res.json('position') >= 1,
      });
      return null;
    case 'won': {
      if (e.won) {
        return null; // Idle, or the order is on its way to claimed.
      }
      e.won = true;
      if (!check(r, {
        'won: a pass and max_quantity 1': (res) => !!res.json('pass') && res.json('max_quantity') === 1,
      })) {
        e.done = true;
        return surprise('won', r);
      }
      if (idle(rank)) {
        e.idle = true;
        winsIdle.add(1);
        return null;
      }
      winsPaying.add(1);
      const started = Date.now();
      const placed = placeOrder(API, SALE, e.token, r.json('pass'), `draw-${e.i}`);
      if (placed === null) {
        e.done = true;
        return null;
      }
      if (placed.soldOut) {
        // A win ordered within its window never gets sold_out (draw.md invariants).
        e.done = true;
        return surprise('order of an open win: sold_out', r);
      }
      const ms = payUntilPaid(API, e.token, placed.order);
      if (ms === null) {
        e.done = true;
        return null;
      }
      e.paid = true;
      ordersPaid.add(1);
      wonToPaid.add(Date.now() - started);
      e.next = Date.now() + 500;
      return null;
    }
    case 'claimed':
      check(e, { 'claimed: a winner who paid': (x) => x.won && x.paid === true });
      return end(e, state);
    case 'forfeited':
      winsForfeited.add(1);
      // An idle rank may lapse between two polls, never seen as won; a paying one must not.
      check(e, { 'forfeited: an idle rank': (x) => x.idle === true || (!x.won && idle(rank)) });
      return end(e, state);
    case 'not_won':
      notWon.add(1);
      check(e, { 'not_won: never won': (x) => !x.won });
      return end(e, state);
    default:
      e.done = true;
      return surprise(`state ${state}`, r);
  }
}

export default function () {
  const vu = exec.vu.idInTest - 1;
  const mine = [];
  for (let i = vu; i < BUYERS; i += VUS) {
    mine.push({ i, token: tokens[i], done: false, won: false });
  }
  let pending = mine.filter((e) => join(e) === true);
  while (pending.length > 0) {
    let e = pending[0];
    for (const x of pending) {
      if (x.next < e.next) {
        e = x;
      }
    }
    const wait = e.next - Date.now();
    if (wait > 0) {
      sleep(wait / 1000);
    }
    poll(e);
    pending = pending.filter((x) => !x.done);
  }
}
