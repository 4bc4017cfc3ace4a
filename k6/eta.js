// k6 scenario `eta`: how honest the waiting room's ETA is (door.md §3, issue #19).
//
// Buyers join an open sale at RATE a second for DURATION seconds and poll exactly
// `retry_after_ms` after each answer (no jitter), as the definition asks. For each buyer:
//   E = the first non-null `eta_seconds` shown (the join's answer or a status answer);
//   W = the time from the join's answer to the first `admitted` answer.
// A buyer who joined after WARMUP seconds is measured: within the bound when
// |W - E| <= 0.2 E + 2 s. The run fails when fewer than 90% of the measured buyers are.
// A measured buyer never shown an ETA counts as outside the bound.
//
// Two cases (k6/run sets the sale up; ETA_CASE only names the output):
//   a  an open sale admitting ADMIT (20) a second, no max_active; buyers stay admitted;
//   b  max_active 50, ADMIT 100; each admitted buyer leaves (`DELETE /w/{sale}/join`, which
//      frees the slot) LEAVE_AFTER (5) seconds after their first `admitted` answer.
//
// The client must poll when told, or the measurement measures the client: a few VUs each drive
// many buyers with timers and asynchronous requests (one VU per buyer would hold thousands of
// JS runtimes), and every request records how late it went out against its due time
// (`client_lateness`: the join against its planned arrival, a poll against the previous answer
// + retry_after_ms, a leave against admission + LEAVE_AFTER) and how late its answer reached
// the script after the response was complete (`answer_lag`).
//
// Each buyer's record goes to the console as one line `eta-buyer {json}`; k6/run collects
// them (artifacts/k6/eta-<case>/buyers.jsonl, eta.json, eta.md).
//
// Fails when: the measured share within the bound is < 90%; not every buyer admitted; any
// unexpected answer (5xx, 4xx, a state other than waiting/admitted); a failed check; the
// client's own lateness p99 >= 500 ms (the run would not measure the server's ETA).
//
// Env: WAITROOM (base URL), SALE (id), BUYERS_FILE (lines of `user_id<TAB>email<TAB>token`),
// RATE (joins/s), DURATION (s), WARMUP (s), LEAVE_AFTER (s; 0 = stay admitted), VUS,
// ETA_CASE, MAX_DURATION.

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import exec from 'k6/execution';
import { setTimeout } from 'k6/timers';
import { loadTokens, surprise } from './lib/buyer.js';

const WAITROOM = __ENV.WAITROOM;
const SALE = __ENV.SALE;
const RATE = parseFloat(__ENV.RATE || '50');
const DURATION = parseFloat(__ENV.DURATION || '60');
const WARMUP = parseFloat(__ENV.WARMUP || '30');
const LEAVE_AFTER = parseFloat(__ENV.LEAVE_AFTER || '0');
const VUS = parseInt(__ENV.VUS || '4', 10);
const CASE = __ENV.ETA_CASE || 'a';
const BUYERS = Math.round(RATE * DURATION);

const tokens = loadTokens(__ENV.BUYERS_FILE);

const admitted = new Counter('buyers_admitted');
const measured = new Counter('eta_buyers_measured');
const neverShown = new Counter('eta_never_shown');
const within = new Rate('eta_within_bound');
const relError = new Trend('eta_abs_error_ratio'); // |W - E| / E
const signedError = new Trend('eta_error_ratio'); // (W - E) / E: > 0 the wait was longer
const waitTrend = new Trend('eta_wait', true); // W
const shownTrend = new Trend('eta_shown_seconds'); // E
const lateness = new Trend('client_lateness', true);
const answerLag = new Trend('answer_lag', true);
const answers = new Trend('answers_per_buyer');

export const options = {
  scenarios: {
    eta: {
      // A few VUs, each driving every VUS-th buyer with timers.
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: __ENV.MAX_DURATION || '20m',
    },
  },
  thresholds: {
    eta_within_bound: ['rate>=0.9'],
    eta_buyers_measured: ['count>0'],
    buyers_admitted: [`count==${BUYERS}`],
    unexpected_responses: ['count==0'],
    checks: ['rate==1'],
    client_lateness: ['p(99)<500'],
    'client_lateness{what:join}': ['p(99)<500'],
    'client_lateness{what:status}': ['p(99)<500'],
    ...(LEAVE_AFTER > 0 ? { 'client_lateness{what:leave}': ['p(99)<500'] } : {}),
  },
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

// One start for every VU, a little after setup so that all are ready.
export function setup() {
  return { start: Date.now() + 1000 };
}

function late(ms, what) {
  lateness.add(Math.max(0, ms), { what });
}

// The time the answer reached this script after the response was complete (event-loop lag).
function lag(sentAt, res) {
  const t = res.timings;
  const spent = t.blocked + t.connecting + t.tls_handshaking + t.duration;
  answerLag.add(Math.max(0, Date.now() - sentAt - spent));
}

function json(res, field) {
  try {
    return res.json(field);
  } catch (_) {
    return undefined;
  }
}

class Buyer {
  constructor(n, start) {
    this.n = n;
    this.token = tokens[n];
    this.plannedOffset = (n * 1000) / RATE; // ms after the common start
    this.due = start + this.plannedOffset;
    this.measured = this.plannedOffset >= WARMUP * 1000;
    this.ticket = null;
    this.joinedAt = null; // the join's answer, client clock
    this.eta = null; // E, seconds
    this.etaAt = null; // ms after the join's answer when E was shown
    this.firstPosition = null;
    this.etaPosition = null;
    this.answers = 0;
    this.maxLate = 0;
  }

  send(what, method, url, headers) {
    const sentAt = Date.now();
    const ms = sentAt - this.due;
    late(ms, what);
    this.maxLate = Math.max(this.maxLate, ms);
    return http
      .asyncRequest(method, url, null, { headers, tags: { name: what } })
      .then((res) => {
        lag(sentAt, res);
        return res;
      });
  }

  join() {
    this.send('join', 'POST', `${WAITROOM}/w/${SALE}/join`, {
      Authorization: `Bearer ${this.token}`,
    })
      .then((res) => {
        if (res.status !== 200) {
          surprise('join', res);
          return;
        }
        this.joinedAt = Date.now();
        this.ticket = json(res, 'ticket');
        this.firstPosition = json(res, 'position');
        this.answer(res, this.joinedAt);
      })
      .catch((e) => this.failed('join', e));
  }

  poll() {
    this.send('status', 'GET', `${WAITROOM}/w/${SALE}/status`, {
      Authorization: `Bearer ${this.ticket}`,
    })
      .then((res) => {
        if (res.status !== 200) {
          surprise('status', res);
          return;
        }
        this.answer(res, Date.now());
      })
      .catch((e) => this.failed('status', e));
  }

  answer(res, at) {
    this.answers += 1;
    const state = json(res, 'state');
    const eta = json(res, 'eta_seconds');
    if (this.eta === null && eta !== null && eta !== undefined) {
      this.eta = eta;
      this.etaAt = at - this.joinedAt;
      this.etaPosition = json(res, 'position');
    }
    if (state === 'admitted') {
      this.admitted(at);
      return;
    }
    if (state !== 'waiting') {
      surprise(`state ${state}`, res);
      return;
    }
    const retry = json(res, 'retry_after_ms');
    if (!check(retry, { 'retry_after_ms is a number': (r) => Number.isFinite(r) && r > 0 })) {
      return;
    }
    // Exactly retry_after_ms after this answer, no jitter (door.md §3's client).
    this.due = at + retry;
    setTimeout(() => this.poll(), Math.max(0, this.due - Date.now()));
  }

  admitted(at) {
    admitted.add(1);
    answers.add(this.answers);
    const w = at - this.joinedAt;
    const record = {
      n: this.n,
      off: Math.round(this.plannedOffset),
      m: this.measured ? 1 : 0,
      p: this.firstPosition,
      e: this.eta,
      ep: this.etaPosition,
      ea: this.etaAt,
      w,
      k: this.answers,
      late: this.maxLate,
    };
    if (this.measured) {
      measured.add(1);
      waitTrend.add(w);
      if (this.eta === null) {
        neverShown.add(1);
        within.add(false);
      } else {
        const e = this.eta * 1000;
        within.add(Math.abs(w - e) <= 0.2 * e + 2000);
        shownTrend.add(this.eta);
        if (e > 0) {
          relError.add(Math.abs(w - e) / e);
          signedError.add((w - e) / e);
        }
      }
    }
    console.log(`eta-buyer ${JSON.stringify(record)}`);
    if (LEAVE_AFTER > 0) {
      this.due = at + LEAVE_AFTER * 1000;
      setTimeout(() => this.leave(), Math.max(0, this.due - Date.now()));
    }
  }

  leave() {
    this.send('leave', 'DELETE', `${WAITROOM}/w/${SALE}/join`, {
      Authorization: `Bearer ${this.ticket}`,
    })
      .then((res) => {
        if (res.status !== 204) {
          surprise('leave', res);
        }
      })
      .catch((e) => this.failed('leave', e));
  }

  failed(what, error) {
    surprise(`${what} (no answer: ${error})`, { status: 0, body: '' });
  }
}

export default function (data) {
  const vu = exec.vu.idInTest - 1;
  for (let n = vu; n < BUYERS; n += VUS) {
    if (n >= tokens.length) {
      break;
    }
    const buyer = new Buyer(n, data.start);
    setTimeout(() => buyer.join(), Math.max(0, buyer.due - Date.now()));
  }
}
