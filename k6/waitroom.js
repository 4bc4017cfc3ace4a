// k6 scenario `waitroom`: a crowd of BUYERS joins before the sale opens and polls, honouring
// retry_after_ms (with jitter, as the waiting page does), until each is admitted; the sale has
// stock for everyone, so the line drains at the admission rate (`admit_per_second`, set by
// k6/run) and nobody should be turned away.
//
// Checks what a buyer sees: before opening the answer is `scheduled` with no position; once
// waiting, a position that never goes up; admission comes with a pass. Fails when: not every
// buyer was admitted; any response a waiting buyer should not get (5xx, 401, 404, 429...); a
// failed check; join p95 >= 500 ms or p99 >= 1 s; status p95 >= 300 ms or p99 >= 1 s.
//
// Env: WAITROOM (base URL), SALE (id), BUYERS, BUYERS_FILE (lines of
// `user_id<TAB>email<TAB>access_token` from `dropline loadtest seed`), MAX_DURATION.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';

const WAITROOM = __ENV.WAITROOM;
const SALE = __ENV.SALE;
const BUYERS = parseInt(__ENV.BUYERS || '5000', 10);

const tokens = new SharedArray('buyers', () =>
  open(__ENV.BUYERS_FILE)
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split('\t')[2]),
);

const admitted = new Counter('buyers_admitted');
const unexpected = new Counter('unexpected_responses');
const waitToAdmission = new Trend('wait_to_admission', true);
const polls = new Trend('polls_per_buyer');

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

function surprise(what, response) {
  unexpected.add(1);
  check(response, { [`${what}: expected answer`]: () => false });
  console.warn(`${what}: ${response.status} ${response.body}`);
}

function wait(ms) {
  const base = ms == null ? 1000 : ms;
  sleep((base * (1 + Math.random() * 0.2)) / 1000);
}

export default function () {
  const token = tokens[exec.vu.idInTest - 1];
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
  let position = r.json('position');
  let retry = r.json('retry_after_ms');
  let lastPosition = null;
  let n = 0;
  for (;;) {
    if (state === 'scheduled') {
      check(position, { 'scheduled: no position yet': (p) => p === null });
    } else if (state === 'waiting') {
      check(position, {
        'waiting: a position that never goes up': (p) =>
          Number.isInteger(p) && p >= 1 && (lastPosition === null || p <= lastPosition),
      });
      lastPosition = position;
    } else if (state === 'admitted') {
      if (r.json('pass')) {
        admitted.add(1);
        waitToAdmission.add(Date.now() - started);
        polls.add(n);
        return;
      }
      retry = 0; // the join's answer carries no pass: ask for it now
    } else {
      return surprise(`state ${state}`, r);
    }
    wait(retry);
    r = http.get(`${WAITROOM}/w/${SALE}/status`, {
      headers: { Authorization: `Bearer ${ticket}` },
      tags: { name: 'status' },
    });
    n += 1;
    if (r.status !== 200) {
      return surprise('status', r);
    }
    state = r.json('state');
    position = r.json('position');
    retry = r.json('retry_after_ms');
  }
}
