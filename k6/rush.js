// k6 scenario `rush`: BUYERS buyers against a sale of STOCK units, end to end, as the seed
// projects' 10,000-against-10 test: join the line -> poll, honouring retry_after_ms (with
// jitter, as the waiting page does) -> admitted, with a pass -> order -> pay -> paid.
//
// Run it with `k6/run rush` (which starts Dropline, seeds the buyers and sets the variables
// below). Each iteration is one buyer; VUS of them are in line at once.
//
// Fails (non-zero exit) when: the number of PAID orders is not exactly STOCK; any response is
// one a buyer should never see (5xx, 401, an unexpected 4xx); any check fails; status polls or
// joins are slow (thresholds below); or, in teardown, the sale's stock does not read
// sold == STOCK, held == 0, available == 0.
//
// Env: WAITROOM, API (base URLs), SALE (id), STOCK, BUYERS, VUS, BUYERS_FILE (lines of
// `user_id<TAB>email<TAB>access_token` from `dropline loadtest seed`), MAX_DURATION.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';

const WAITROOM = __ENV.WAITROOM;
const API = __ENV.API;
const SALE = __ENV.SALE;
const STOCK = parseInt(__ENV.STOCK || '10', 10);
const BUYERS = parseInt(__ENV.BUYERS || '10000', 10);
const VUS = parseInt(__ENV.VUS || '500', 10);

const tokens = new SharedArray('buyers', () =>
  open(__ENV.BUYERS_FILE)
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split('\t')[2]),
);

const ordersPaid = new Counter('orders_paid');
const soldOut = new Counter('buyers_sold_out');
const unexpected = new Counter('unexpected_responses');
const waitToAdmission = new Trend('wait_to_admission', true);
const payToPaid = new Trend('pay_to_paid', true);

export const options = {
  scenarios: {
    rush: {
      executor: 'shared-iterations',
      vus: Math.min(VUS, BUYERS),
      iterations: BUYERS,
      maxDuration: __ENV.MAX_DURATION || '10m',
    },
  },
  thresholds: {
    orders_paid: [`count==${STOCK}`],
    unexpected_responses: ['count==0'],
    checks: ['rate==1'],
    'http_req_duration{name:join}': ['p(95)<500', 'p(99)<1000'],
    'http_req_duration{name:status}': ['p(95)<300', 'p(99)<1000'],
    'http_req_duration{name:order}': ['p(99)<1000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

function errorCode(response) {
  try {
    return response.json('error.code');
  } catch (_) {
    return null;
  }
}

// A response a buyer in a rush may legitimately get is checked by the caller; anything else
// lands here.
function surprise(what, response) {
  unexpected.add(1);
  check(response, { [`${what}: expected answer`]: () => false });
  console.warn(`${what}: ${response.status} ${response.body}`);
}

// Sleeps as the waiting page does: the server's delay, plus up to 20% jitter.
function wait(ms) {
  const base = ms == null ? 1000 : ms;
  sleep((base * (1 + Math.random() * 0.2)) / 1000);
}

export default function () {
  const token = tokens[exec.scenario.iterationInTest];
  const started = Date.now();
  let r = http.post(`${WAITROOM}/w/${SALE}/join`, null, {
    headers: { Authorization: `Bearer ${token}` },
    tags: { name: 'join' },
  });
  if (r.status !== 200) {
    return surprise('join', r);
  }
  const ticket = r.json('ticket');
  let state = r.json('state');
  let retry = r.json('retry_after_ms');
  let pass = null;
  for (;;) {
    if (state === 'sold_out' || state === 'closed') {
      soldOut.add(1);
      return;
    }
    if (state === 'admitted' && pass) {
      break;
    }
    // Admitted by the last answer but no pass in it (the join's answer carries none): ask now.
    wait(state === 'admitted' ? 0 : retry);
    r = http.get(`${WAITROOM}/w/${SALE}/status`, {
      headers: { Authorization: `Bearer ${ticket}` },
      tags: { name: 'status' },
    });
    if (r.status !== 200) {
      return surprise('status', r);
    }
    state = r.json('state');
    retry = r.json('retry_after_ms');
    pass = r.json('pass');
  }
  waitToAdmission.add(Date.now() - started);

  r = http.post(`${API}/api/orders`, JSON.stringify({ sale_id: SALE, quantity: 1 }), {
    headers: {
      Authorization: `Bearer ${token}`,
      'Dropline-Pass': pass,
      'Idempotency-Key': `rush-${exec.scenario.iterationInTest}`,
      'Content-Type': 'application/json',
    },
    tags: { name: 'order' },
  });
  if (r.status === 409 && errorCode(r) === 'sold_out') {
    // Admitted while the last units were still held by others, which then sold.
    soldOut.add(1);
    return;
  }
  if (!check(r, { 'order: 201 held': (res) => res.status === 201 && res.json('status') === 'held' })) {
    return surprise('order', r);
  }
  const order = r.json('id');
  const auth = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
  const paid = Date.now();
  r = http.post(`${API}/api/orders/${order}/pay`, JSON.stringify({ card_token: 'tok_visa' }), {
    headers: auth,
    tags: { name: 'pay' },
  });
  if (!check(r, { 'pay: 202': (res) => res.status === 202 })) {
    return surprise('pay', r);
  }
  for (let i = 0; i < 300; i++) {
    sleep(0.1);
    r = http.get(`${API}/api/orders/${order}`, { headers: auth, tags: { name: 'order_status' } });
    if (r.status !== 200) {
      return surprise('order status', r);
    }
    const status = r.json('status');
    if (status === 'paid') {
      ordersPaid.add(1);
      payToPaid.add(Date.now() - paid);
      return;
    }
    if (status !== 'paying') {
      return surprise(`order ended ${status}`, r);
    }
  }
  surprise('order still paying after 30 s', r);
}

// After the rush: the sale's own figures must say exactly STOCK sold, nothing held.
export function teardown() {
  const r = http.get(`${API}/api/sales/${SALE}/stock`, { tags: { name: 'stock' } });
  check(r, {
    'teardown: stock readable': (res) => res.status === 200,
    [`teardown: sold == ${STOCK}`]: (res) => res.json('sold') === STOCK,
    'teardown: held == 0': (res) => res.json('held') === 0,
    'teardown: available == 0': (res) => res.json('available') === 0,
  });
}
