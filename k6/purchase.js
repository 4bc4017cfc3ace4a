// k6 scenario `purchase`: sustained buying at a target rate. RATE new buyers arrive every
// second for DURATION seconds (constant arrival rate); each joins the open sale's line, is
// admitted (the sale admits faster than RATE, so the line stays short), orders one unit, pays
// and waits for PAID. Reports confirmed orders per second (`orders_paid` / DURATION) and the
// pay -> PAID latency a buyer sees.
//
// Fails when: fewer than 95% of the arrivals end PAID (k6 could not keep the rate, or orders
// failed); any answer a buyer should not get; a failed check; order p99 >= 500 ms; pay -> PAID
// p99 >= 1 s.
//
// Env: WAITROOM, API (base URLs), SALE (id), RATE, DURATION (seconds), MAX_VUS, BUYERS_FILE
// (RATE x DURATION lines of `user_id<TAB>email<TAB>access_token` from `dropline loadtest seed`).

import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { loadTokens, placeOrder, payUntilPaid, waitForPass } from './lib/buyer.js';

const WAITROOM = __ENV.WAITROOM;
const API = __ENV.API;
const SALE = __ENV.SALE;
const RATE = parseInt(__ENV.RATE || '300', 10);
const DURATION = parseInt(__ENV.DURATION || '60', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || String(RATE * 4), 10);

const tokens = loadTokens(__ENV.BUYERS_FILE);
const ordersPaid = new Counter('orders_paid');
const payToPaid = new Trend('pay_to_paid', true);
const arrivalToPaid = new Trend('arrival_to_paid', true);

export const options = {
  scenarios: {
    buyers: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${DURATION}s`,
      preAllocatedVUs: MAX_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    orders_paid: [`count>=${Math.floor(RATE * DURATION * 0.95)}`],
    unexpected_responses: ['count==0'],
    checks: ['rate==1'],
    'http_req_duration{name:order}': ['p(99)<500'],
    pay_to_paid: ['p(99)<1000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  const n = exec.scenario.iterationInTest;
  if (n >= tokens.length) {
    return;
  }
  const token = tokens[n];
  const started = Date.now();
  const line = waitForPass(WAITROOM, SALE, token);
  if (line === null) {
    return;
  }
  if (!check(line, { 'admitted (the stock covers every arrival)': (l) => !!l.pass })) {
    return;
  }
  const placed = placeOrder(API, SALE, token, line.pass, `purchase-${n}`);
  if (placed === null) {
    return;
  }
  if (!check(placed, { 'order placed (not sold out)': (p) => !!p.order })) {
    return;
  }
  const ms = payUntilPaid(API, token, placed.order);
  if (ms === null) {
    return;
  }
  ordersPaid.add(1);
  payToPaid.add(ms);
  arrivalToPaid.add(Date.now() - started);
}

