// k6 scenario `rush`: BUYERS buyers against a sale of STOCK units, end to end, as the seed
// projects' 10,000-against-10 test: join the line -> poll, honouring retry_after_ms (with
// jitter, as the waiting page does) -> admitted, with a pass -> order -> pay -> paid.
//
// Run it with `k6/run rush` (which starts Dropline, seeds the buyers and sets the variables
// below). Each iteration is one buyer; VUS of them are in line at once.
//
// Each buyer's record goes to the console as one line `report-buyer {json}` (reportBuyer in
// lib/buyer.js): k6/run hands them to k6/lib/report_check.py, which checks the sale's report.
//
// Fails (non-zero exit) when: the number of PAID orders is not exactly STOCK; any response is
// one a buyer should never see (5xx, 401, an unexpected 4xx); any check fails; status polls or
// joins are slow (thresholds below); or, in teardown, the sale's stock does not read
// sold == STOCK, held == 0, available == 0.
//
// Env: WAITROOM, API (base URLs), SALE (id), STOCK, BUYERS, VUS, BUYERS_FILE (lines of
// `user_id<TAB>email<TAB>access_token` from `dropline loadtest seed`), MAX_DURATION.

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { loadTokens, placeOrder, payUntilPaid, reportBuyer, waitForPass } from './lib/buyer.js';

const WAITROOM = __ENV.WAITROOM;
const API = __ENV.API;
const SALE = __ENV.SALE;
const STOCK = parseInt(__ENV.STOCK || '10', 10);
const BUYERS = parseInt(__ENV.BUYERS || '10000', 10);
const VUS = parseInt(__ENV.VUS || '500', 10);

const tokens = loadTokens(__ENV.BUYERS_FILE);
const ordersPaid = new Counter('orders_paid');
const soldOut = new Counter('buyers_sold_out');
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

export default function () {
  const n = exec.scenario.iterationInTest;
  const token = tokens[n];
  const started = Date.now();
  const line = waitForPass(WAITROOM, SALE, token);
  if (line !== null && line.ended) {
    soldOut.add(1);
  }
  const outcome = line === null || line.ended ? null : buy(line, n, started);
  reportBuyer(line, outcome !== null && outcome.ordered, outcome !== null && outcome.paid);
}

// An admitted buyer orders and pays: {ordered, paid}.
function buy(line, n, started) {
  waitToAdmission.add(Date.now() - started);
  const placed = placeOrder(API, SALE, tokens[n], line.pass, `rush-${n}`);
  if (placed === null || placed.soldOut) {
    if (placed !== null) {
      soldOut.add(1);
    }
    return { ordered: false, paid: false };
  }
  const ms = payUntilPaid(API, tokens[n], placed.order);
  if (ms === null) {
    return { ordered: true, paid: false };
  }
  ordersPaid.add(1);
  payToPaid.add(ms);
  return { ordered: true, paid: true };
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
