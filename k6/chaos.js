// k6 scenario `chaos`: the rush of rush.js, written for compose/chaos, which kills and restarts
// replicas, workers, the admitter leader and RabbitMQ while it runs. A buyer here behaves as a
// browser would under such failures: an answer of 502/503/504 (a replica just died, the broker is
// restarting) or no answer at all is retried after a short pause, with the same Idempotency-Key
// for the order and the same pay request ("calling again is harmless"). Some buyers abandon
// their hold (ABANDON share: the hold must expire) and some pay with a declined card (FAIL
// share: stock must come back); the rest pay and wait for the outcome.
//
// It has no thresholds: under chaos a buyer may give up, and that is not what compose/chaos
// judges. compose/chaos judges the outcome afterwards, from MySQL, Redis and `dropline sale
// audit`. The counters below only say what the buyers saw.
//
// Env: WAITROOM, API (base URLs), SALE, BUYERS, VUS, BUYERS_FILE (from `dropline loadtest
// seed`), MAX_DURATION, ABANDON (0.1), FAIL (0.05), CARD_OK (`tok_visa`; `pm_card_visa` with
// Stripe) and CARD_FAIL (`tok_fail`; `pm_card_chargeCustomerFail` with Stripe).
//
// Each buyer that got an order logs one history line for compose/chaos's lost / duplicated /
// unexpected / recovered counts: `HIST n=<n> order=<id> create=<ok|retried> pay=<none|ok|retried|
// gave_up> seen=<paid|failed|abandoned|gave_up|paying>` (`retried`: an answer was a failure of
// the platform or missing at least once, so the buyer did not know whether the call took).

import http from 'k6/http';
import { sleep } from 'k6';
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';
import { loadTokens, wait } from './lib/buyer.js';

const WAITROOM = __ENV.WAITROOM;
const API = __ENV.API;
const SALE = __ENV.SALE;
const BUYERS = parseInt(__ENV.BUYERS || '400', 10);
const VUS = parseInt(__ENV.VUS || '400', 10);
const ABANDON = parseFloat(__ENV.ABANDON || '0.1');
const FAIL = parseFloat(__ENV.FAIL || '0.05');
const CARD_OK = __ENV.CARD_OK || 'tok_visa';
const CARD_FAIL = __ENV.CARD_FAIL || 'tok_fail';

const tokens = loadTokens(__ENV.BUYERS_FILE);
const paid = new Counter('orders_paid');
const declined = new Counter('orders_failed');
const abandoned = new Counter('holds_abandoned');
const soldOut = new Counter('buyers_sold_out');
const gaveUp = new Counter('buyers_gave_up');
const retried = new Counter('requests_retried');

export const options = {
  scenarios: {
    chaos: {
      executor: 'shared-iterations',
      vus: Math.min(VUS, BUYERS),
      iterations: BUYERS,
      maxDuration: __ENV.MAX_DURATION || '3m',
    },
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

// Sends `send()` until the answer is not a failure of the platform (no answer, 502, 503, 504),
// up to `tries` times; returns the last answer. `seen.retried` is set when it retried.
function retrying(send, tries, seen) {
  let r = send();
  for (let i = 1; i < tries && (r.status === 0 || r.status === 502 || r.status === 503 || r.status === 504); i++) {
    retried.add(1);
    if (seen) {
      seen.retried = true;
    }
    sleep(0.5 + Math.random() * 0.5);
    r = send();
  }
  return r;
}

function json(r, field) {
  try {
    return r.json(field);
  } catch (_) {
    return null;
  }
}

function giveUp(what, r) {
  gaveUp.add(1);
  console.warn(`${what}: ${r.status} ${String(r.body).slice(0, 200)}`);
}

export default function () {
  const n = exec.scenario.iterationInTest;
  const token = tokens[n];
  const auth = { Authorization: `Bearer ${token}` };
  let r = retrying(() => http.post(`${WAITROOM}/w/${SALE}/join`, null, { headers: auth, tags: { name: 'join' } }), 20);
  if (r.status !== 200) {
    return giveUp('join', r);
  }
  const ticket = json(r, 'ticket');
  let state = json(r, 'state');
  let retry = json(r, 'retry_after_ms');
  let pass = null;
  while (!(state === 'admitted' && pass)) {
    if (state === 'sold_out' || state === 'closed') {
      soldOut.add(1);
      return;
    }
    wait(state === 'admitted' ? 0 : Math.min(retry || 1000, 5000));
    r = retrying(
      () => http.get(`${WAITROOM}/w/${SALE}/status`, { headers: { Authorization: `Bearer ${ticket}` }, tags: { name: 'status' } }),
      20,
    );
    if (r.status !== 200) {
      return giveUp('status', r);
    }
    state = json(r, 'state');
    retry = json(r, 'retry_after_ms');
    pass = json(r, 'pass');
  }
  const headers = { ...auth, 'Content-Type': 'application/json' };
  const created = { retried: false };
  r = retrying(
    () =>
      http.post(`${API}/api/orders`, JSON.stringify({ sale_id: SALE, quantity: 1 }), {
        headers: { ...headers, 'Dropline-Pass': pass, 'Idempotency-Key': `chaos-${n}` },
        tags: { name: 'order' },
      }),
    20,
    created,
  );
  if (r.status === 409 && json(r, 'error.code') === 'sold_out') {
    soldOut.add(1);
    return;
  }
  if (r.status !== 201 && r.status !== 200) {
    return giveUp('order', r);
  }
  const order = json(r, 'id');
  const history = (pay, seen) =>
    console.log(`HIST n=${n} order=${order} create=${created.retried ? 'retried' : 'ok'} pay=${pay} seen=${seen}`);
  const roll = Math.random();
  if (roll < ABANDON) {
    abandoned.add(1);
    history('none', 'abandoned');
    return;
  }
  const card = roll < ABANDON + FAIL ? CARD_FAIL : CARD_OK;
  const paying = { retried: false };
  r = retrying(
    () => http.post(`${API}/api/orders/${order}/pay`, JSON.stringify({ card_token: card }), { headers, tags: { name: 'pay' } }),
    20,
    paying,
  );
  const pay = paying.retried ? 'retried' : 'ok';
  // 202: paying now. 200: the order was already decided (a retry after an answer that was
  // lost, whose first call went through): its status says how, and the poll below reads it.
  if (r.status !== 202 && r.status !== 200) {
    history('gave_up', 'gave_up');
    return giveUp('pay', r);
  }
  for (let i = 0; i < 120; i++) {
    sleep(0.5);
    r = retrying(() => http.get(`${API}/api/orders/${order}`, { headers, tags: { name: 'order_status' } }), 20);
    const status = json(r, 'status');
    if (r.status !== 200) {
      history(pay, 'gave_up');
      return giveUp('order status', r);
    }
    if (status === 'paid') {
      paid.add(1);
      history(pay, 'paid');
      return;
    }
    if (status !== 'paying') {
      declined.add(1);
      history(pay, 'failed');
      return;
    }
  }
  history(pay, 'paying');
  giveUp('still paying after 60 s', r);
}
