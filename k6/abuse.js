// k6 scenario `abuse`: honest buyers buying while hostile ones attack (issue #17, "A hostile
// load run"). Run it with `k6/run abuse` (and `k6/run --clean abuse` for the same run without
// the hostile buyers, to compare); k6/run also holds half-sent connections beside k6
// (k6/lib/halfopen.py) and reads Redis memory before and after.
//
// Honest buyers (scenario `honest`, tag role=honest): HONEST of them arrive at RATE a second
// and each buys as in `rush`, through the same k6/lib/buyer.js flow: join -> poll honouring
// retry_after_ms -> pass -> order one unit -> pay -> PAID. The stock covers every honest buyer,
// so each one should end PAID; measured: honest_paid, honest_join_to_paid (join -> PAID).
//
// Hostile buyers (tag role=hostile): HOSTILE of them, split by turns into three roles, each
// acting at the fixed per-buyer rates below for the honest arrivals' duration + TAIL_SECONDS:
//   payer     holds an order (made in setup) and hammers POST /api/orders/{id}/pay on it with
//             tok_slow (the card that keeps a payment in flight for the whole payment timeout);
//   flooder   holds an order (made in setup, left HELD) and floods POST /api/orders that must be
//             refused, by turns: a fresh key for one more unit (limit_exceeded: the sale's
//             per-user limit is 1, as in rush) and its own order's key with another quantity
//             (idempotency_key_reused); past the per-user limiter they get 429 rate_limited.
//             (No hostile request can get sold_out here: the admitter lets a buyer in only with
//             a unit set aside for it (lua/wr_admit.lua's stock rule), so an admitted buyer who
//             holds nothing finds one, and one who holds one meets the per-user limit first.
//             The answer is listed, so a sold_out would show.)
//   rejoiner  joins the line and leaves it again (POST then DELETE /w/{sale}/join), in a loop.
// Every hostile answer is counted in hostile_answers{action, answer} ("429_rate_limited").
//
// Fails (non-zero exit) when: an honest buyer does not end PAID; an honest buyer gets an answer
// a buyer should never get (lib/buyer.js `unexpected_responses`); any 5xx or no answer, for
// anyone (server_errors); a hostile request is *accepted* where it must be refused (a flood
// order created: hostile_breaches); a failed check. Speed is measured, not judged.
//
// Env: WAITROOM, API (base URLs), SALE (id), BUYERS
// (honest), HOSTILE (0 = the clean run), RATE (honest arrivals a second), BUYERS_FILE (BUYERS +
// HOSTILE + WARM_UP lines of `user_id<TAB>email<TAB>access_token`: honest, hostile, warm-up).

import http from 'k6/http';
import { sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { loadTokens, placeOrder, payUntilPaid, waitForPass } from './lib/buyer.js';

// The hostile rates, per hostile buyer of each role (fixed, so runs compare).
export const PAY_PER_SECOND = 20; // POST /pay on its own order
export const ORDERS_PER_SECOND = 20; // refused POST /api/orders
export const REJOINS_PER_SECOND = 4; // join + leave cycles (two requests each)
// Hostile traffic goes on this long after the last honest arrival.
export const TAIL_SECONDS = 5;
// Buyers that join and leave in setup, in both runs (see setup).
export const WARM_UP = 5;
// The card that keeps the hostile payments in flight (the simulated provider answers it after
// the payment timeout): the costliest pay there is.
export const HOSTILE_CARD = 'tok_slow';

const WAITROOM = __ENV.WAITROOM;
const API = __ENV.API;
const SALE = __ENV.SALE;
const HONEST = parseInt(__ENV.BUYERS || '500', 10);
const HOSTILE = parseInt(__ENV.HOSTILE || '20', 10);
const RATE = parseInt(__ENV.RATE || '20', 10);

const HONEST_SECONDS = Math.ceil(HONEST / RATE);
const HOSTILE_SECONDS = HONEST_SECONDS + TAIL_SECONDS;
const ROLES = ['payer', 'flooder', 'rejoiner'];
const roleCount = (role) => Array.from({ length: HOSTILE }, (_, i) => ROLES[i % 3]).filter((r) => r === role).length;
const PAYERS = roleCount('payer');
const FLOODERS = roleCount('flooder');
const REJOINERS = roleCount('rejoiner');

const tokens = loadTokens(__ENV.BUYERS_FILE);
const honestPaid = new Counter('honest_paid');
const honestSoldOut = new Counter('honest_sold_out');
const joinToPaid = new Trend('honest_join_to_paid', true);
const hostileAnswers = new Counter('hostile_answers');
const hostileBreaches = new Counter('hostile_breaches');
const serverErrors = new Counter('server_errors');

// The answers a hostile request may get; each is listed in the summary (a threshold that always
// holds makes k6 export the sub-metric). Anything else is counted as `other` and logged.
const ANSWERS = {
  pay: ['202_paying', '200_paid', '429_rate_limited', '409_invalid_state'],
  order: ['409_sold_out', '409_limit_exceeded', '409_idempotency_key_reused', '429_rate_limited', '403_not_admitted'],
  join: ['200', '429_rate_limited'],
  leave: ['204', '429_rate_limited'],
};

const scenarios = {
  honest: {
    executor: 'constant-arrival-rate',
    exec: 'honest',
    rate: RATE,
    timeUnit: '1s',
    duration: `${HONEST_SECONDS}s`,
    preAllocatedVUs: Math.min(HONEST, RATE * 8),
    maxVUs: Math.min(HONEST, RATE * 20),
    gracefulStop: '60s',
    tags: { role: 'honest' },
  },
};
function hostileScenario(fn, rate) {
  return {
    executor: 'constant-arrival-rate',
    exec: fn,
    rate,
    timeUnit: '1s',
    duration: `${HOSTILE_SECONDS}s`,
    preAllocatedVUs: Math.max(4, Math.ceil(rate / 4)),
    maxVUs: Math.max(20, rate),
    tags: { role: 'hostile' },
  };
}
if (PAYERS > 0) scenarios.hostile_pay = hostileScenario('hammerPay', PAY_PER_SECOND * PAYERS);
if (FLOODERS > 0) scenarios.hostile_orders = hostileScenario('floodOrders', ORDERS_PER_SECOND * FLOODERS);
if (REJOINERS > 0) scenarios.hostile_rejoin = hostileScenario('rejoin', REJOINS_PER_SECOND * REJOINERS);

const thresholds = {
  honest_paid: [`count==${HONEST}`],
  unexpected_responses: ['count==0'],
  server_errors: ['count==0'],
  hostile_breaches: ['count==0'],
  checks: ['rate==1'],
  // Listed for the summary only (they always hold): what honest and hostile requests took.
  'http_req_duration{role:honest}': ['max>=0'],
  'http_req_duration{role:hostile}': ['max>=0'],
  'http_reqs{role:honest}': ['count>=0'],
  'http_reqs{role:hostile}': ['count>=0'],
};
if (HOSTILE > 0) {
  for (const [action, answers] of Object.entries(ANSWERS)) {
    for (const answer of [...answers, 'other']) {
      thresholds[`hostile_answers{action:${action},answer:${answer}}`] = ['count>=0'];
    }
  }
}

export const options = {
  scenarios,
  thresholds,
  setupTimeout: '120s',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

function errorCode(r) {
  try {
    return r.json('error.code');
  } catch (_) {
    return null;
  }
}

// Any 5xx or no answer at all, whoever asked.
function watch(r) {
  if (r.status === 0 || r.status >= 500) {
    serverErrors.add(1, { role: exec.scenario.name === 'honest' ? 'honest' : 'hostile' });
  }
  return r;
}

let warned = 0;
function record(action, r) {
  watch(r);
  let answer = String(r.status);
  if (r.status === 202 || (r.status === 200 && action === 'pay')) {
    let status = null;
    try {
      status = r.json('status');
    } catch (_) {
      status = null;
    }
    answer = `${r.status}_${status}`;
  } else if (r.status >= 400) {
    answer = `${r.status}_${errorCode(r)}`;
  }
  if (!ANSWERS[action].includes(answer)) {
    if (warned++ < 10) {
      console.warn(`hostile ${action}: unlisted answer ${r.status} ${String(r.body).slice(0, 200)}`);
    }
    answer = 'other';
  }
  hostileAnswers.add(1, { action, answer });
}

const hostileIndex = (i) => HONEST + i;

const auth = (b) => ({ Authorization: `Bearer ${b.token}` });

// Joins the line for every buyer of `group` and polls (every second, in batches) until each
// holds a pass; throws after 60 s.
function admit(group, tag) {
  let answers = http.batch(group.map((b) => ['POST', `${WAITROOM}/w/${SALE}/join`, null, { headers: auth(b), ...tag }]));
  group.forEach((b, n) => {
    b.ticket = answers[n].json('ticket');
  });
  for (let round = 0; round < 60 && group.some((b) => !b.pass); round++) {
    sleep(1);
    const waiting = group.filter((b) => !b.pass);
    answers = http.batch(
      waiting.map((b) => ['GET', `${WAITROOM}/w/${SALE}/status`, null, { headers: { Authorization: `Bearer ${b.ticket}` }, ...tag }]),
    );
    waiting.forEach((b, n) => {
      b.last = `${answers[n].status} ${answers[n].body}`;
      if (answers[n].status === 200 && answers[n].json('pass')) {
        b.pass = answers[n].json('pass');
      }
    });
  }
  const stuck = group.find((b) => !b.pass);
  if (stuck) {
    throw new Error(`setup: a buyer was not admitted within 60 s: ${stuck.last}`);
  }
}

// Setup, the same in both runs: WARM_UP buyers join, are admitted and leave again, so that
// the admitter has measured a rate when the honest buyers come. (Without it, the first
// arrivals in a line that was idle get retry_after_ms 15,000: the ETA reads the idle line's
// measured rate of 0 as a stalled admission; the hostile setup below would warm the line in
// the hostile run only, and the runs would not compare.) Then the payers and flooders join,
// are admitted and order one unit each (every request in a batch, so that setup takes
// seconds whatever HOSTILE is).
export function setup() {
  const warm = Array.from({ length: WARM_UP }, (_, i) => ({ token: tokens[HONEST + HOSTILE + i] }));
  admit(warm, { tags: { name: 'warm_up', role: 'warm_up' } });
  http.batch(
    warm.map((b) => ['DELETE', `${WAITROOM}/w/${SALE}/join`, null, { headers: { Authorization: `Bearer ${b.ticket}` }, tags: { name: 'warm_up', role: 'warm_up' } }]),
  );
  const buyers = [];
  for (let i = 0; i < HOSTILE; i++) {
    buyers.push({ i, role: ROLES[i % 3], token: tokens[hostileIndex(i)], key: `hostile-own-${i}` });
  }
  const ordering = buyers.filter((b) => b.role !== 'rejoiner');
  if (ordering.length === 0) {
    return { buyers };
  }
  const tag = { tags: { name: 'hostile_setup', role: 'hostile' } };
  admit(ordering, tag);
  const answers = http.batch(
    ordering.map((b) => [
      'POST',
      `${API}/api/orders`,
      JSON.stringify({ sale_id: SALE, quantity: 1 }),
      {
        headers: { ...auth(b), 'Dropline-Pass': b.pass, 'Idempotency-Key': b.key, 'Content-Type': 'application/json' },
        ...tag,
      },
    ]),
  );
  ordering.forEach((b, n) => {
    if (answers[n].status !== 201) {
      throw new Error(`setup: hostile order refused: ${answers[n].status} ${answers[n].body}`);
    }
    b.order = answers[n].json('id');
  });
  return { buyers };
}

// One honest buyer, as in rush.
export function honest() {
  const n = exec.scenario.iterationInTest;
  if (n >= HONEST) {
    return;
  }
  const token = tokens[n];
  const started = Date.now();
  const line = waitForPass(WAITROOM, SALE, token);
  if (line === null) {
    return;
  }
  if (line.ended) {
    honestSoldOut.add(1);
    return;
  }
  const placed = placeOrder(API, SALE, token, line.pass, `abuse-honest-${n}`);
  if (placed === null) {
    return;
  }
  if (placed.soldOut) {
    honestSoldOut.add(1);
    return;
  }
  if (payUntilPaid(API, token, placed.order) === null) {
    return;
  }
  honestPaid.add(1);
  joinToPaid.add(Date.now() - started);
}

function pick(data, role) {
  const mine = data.buyers.filter((b) => b.role === role);
  return mine[exec.scenario.iterationInTest % mine.length];
}

export function hammerPay(data) {
  const b = pick(data, 'payer');
  const r = http.post(`${API}/api/orders/${b.order}/pay`, JSON.stringify({ card_token: HOSTILE_CARD }), {
    headers: { Authorization: `Bearer ${b.token}`, 'Content-Type': 'application/json' },
    tags: { name: 'hostile_pay' },
  });
  record('pay', r);
}

export function floodOrders(data) {
  const b = pick(data, 'flooder');
  const n = exec.scenario.iterationInTest;
  const turn = Math.floor(n / FLOODERS) % 2;
  // One more unit with a fresh key (limit_exceeded), or its own key with another body.
  const quantity = turn === 0 ? 1 : 2;
  const key = turn === 0 ? `flood-${b.i}-${n}` : b.key;
  const r = http.post(`${API}/api/orders`, JSON.stringify({ sale_id: SALE, quantity }), {
    headers: {
      Authorization: `Bearer ${b.token}`,
      'Dropline-Pass': b.pass,
      'Idempotency-Key': key,
      'Content-Type': 'application/json',
    },
    tags: { name: 'hostile_order' },
  });
  if (r.status === 200 || r.status === 201) {
    hostileBreaches.add(1);
    console.error(`hostile order accepted: ${r.status} ${r.body}`);
  }
  record('order', r);
}

export function rejoin(data) {
  const b = pick(data, 'rejoiner');
  const r = http.post(`${WAITROOM}/w/${SALE}/join`, null, {
    headers: { Authorization: `Bearer ${b.token}` },
    tags: { name: 'hostile_join' },
  });
  record('join', r);
  if (r.status !== 200) {
    return;
  }
  const left = http.del(`${WAITROOM}/w/${SALE}/join`, null, {
    headers: { Authorization: `Bearer ${r.json('ticket')}` },
    tags: { name: 'hostile_leave' },
  });
  record('leave', left);
}
