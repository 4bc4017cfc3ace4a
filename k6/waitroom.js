// k6 scenario `waitroom`: a crowd of BUYERS joins before the sale opens and polls, honouring
// retry_after_ms (with jitter, as the waiting page does), until each is admitted; the sale has
// stock for everyone, so the line drains at the admission rate (`admit_per_second`, set by
// k6/run) and nobody should be turned away.
//
// Each buyer's record goes to the console as `report-buyer {json}` for k6/lib/report_check.py.
//
// Checks what a buyer sees: before opening the answer is `scheduled` with no position; once
// waiting, a position that never goes up; admission comes with a pass. Fails when: not every
// buyer was admitted; any response a waiting buyer should not get (5xx, 401, 404, 429...); a
// failed check; join p95 >= 500 ms or p99 >= 1 s; status p95 >= 300 ms or p99 >= 1 s.
//
// Env: WAITROOM (base URL), SALE (id), BUYERS, BUYERS_FILE (lines of
// `user_id<TAB>email<TAB>access_token` from `dropline loadtest seed`), MAX_DURATION.

import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { loadTokens, reportBuyer, waitForPass } from './lib/buyer.js';

const WAITROOM = __ENV.WAITROOM;
const SALE = __ENV.SALE;
const BUYERS = parseInt(__ENV.BUYERS || '2000', 10);

const tokens = loadTokens(__ENV.BUYERS_FILE);
const admitted = new Counter('buyers_admitted');
const waitToAdmission = new Trend('wait_to_admission', true);
const polls = new Trend('answers_per_buyer');

export const options = {
  scenarios: {
    crowd: {
      // Every buyer is in line at once: one VU each.
      executor: 'per-vu-iterations',
      vus: BUYERS,
      iterations: 1,
      maxDuration: __ENV.MAX_DURATION || '10m',
    },
  },
  thresholds: {
    buyers_admitted: [`count==${BUYERS}`],
    unexpected_responses: ['count==0'],
    checks: ['rate==1'],
    'http_req_duration{name:join}': ['p(95)<500', 'p(99)<1000'],
    'http_req_duration{name:status}': ['p(95)<300', 'p(99)<1000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  const token = tokens[exec.vu.idInTest - 1];
  const started = Date.now();
  let lastPosition = null;
  let answers = 0;
  const line = waitForPass(WAITROOM, SALE, token, (state, position) => {
    answers += 1;
    if (state === 'scheduled') {
      check(position, { 'scheduled: no position yet': (p) => p === null });
    } else if (state === 'waiting') {
      check(position, {
        'waiting: a position that never goes up': (p) =>
          Number.isInteger(p) && p >= 1 && (lastPosition === null || p <= lastPosition),
      });
      lastPosition = position;
    }
  });
  reportBuyer(line, false, false);
  if (line === null) {
    return;
  }
  if (!check(line, { 'admitted with a pass (the stock covers everyone)': (l) => !!l.pass })) {
    return;
  }
  admitted.add(1);
  waitToAdmission.add(Date.now() - started);
  polls.add(answers);
}
