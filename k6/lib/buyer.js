// What one buyer does, shared by the k6 scenarios: join the line and wait for a pass
// (honouring retry_after_ms with jitter, as the waiting page does), order, pay and wait for the
// outcome. Every step reports an answer a buyer should never get through `unexpected`.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import { SharedArray } from 'k6/data';

export const unexpected = new Counter('unexpected_responses');

// The access tokens from `dropline loadtest seed` (lines of user_id<TAB>email<TAB>token).
export function loadTokens(path) {
  return new SharedArray('buyers', () =>
    open(path)
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => line.split('\t')[2]),
  );
}

// Counts an answer a buyer should not get, fails a check, and logs it.
export function surprise(what, response) {
  unexpected.add(1);
  check(response, { [`${what}: expected answer`]: () => false });
  console.warn(`${what}: ${response.status} ${response.body}`);
  return null;
}

// Sleeps for the server's delay plus up to 20% jitter.
export function wait(ms) {
  const base = ms == null ? 1000 : ms;
  sleep((base * (1 + Math.random() * 0.2)) / 1000);
}

function errorCode(response) {
  try {
    return response.json('error.code');
  } catch (_) {
    return null;
  }
}

// Joins SALE's line and polls until admitted (returns {pass, passExpiresAt}) or the sale is
// sold out or closed (returns {ended: state}); null after an unexpected answer.
// `onAnswer(state, position)` sees every answer on the way. Both answers also carry what the
// post-sale report's check (k6/lib/report_check.py) needs from this buyer's side: `joinSent`
// and `joinAnswered` (epoch ms around the join request) and `opensAt` (the join answer's).
export function waitForPass(waitroom, sale, token, onAnswer) {
  const joinSent = Date.now();
  let r = http.post(`${waitroom}/w/${sale}/join`, null, {
    headers: { Authorization: `Bearer ${token}` },
    tags: { name: 'join' },
  });
  const joinAnswered = Date.now();
  if (r.status !== 200) {
    return surprise('join', r);
  }
  const joined = { joinSent, joinAnswered, opensAt: r.json('opens_at'), joinState: r.json('state') };
  const ticket = r.json('ticket');
  let state = r.json('state');
  let retry = r.json('retry_after_ms');
  let pass = null;
  for (;;) {
    if (onAnswer) {
      onAnswer(state, r.json('position'));
    }
    if (state === 'sold_out' || state === 'closed') {
      return { ended: state, ...joined };
    }
    if (state === 'admitted' && pass) {
      return { pass, passExpiresAt: r.json('pass_expires_at'), ...joined };
    }
    if (state !== 'scheduled' && state !== 'waiting' && state !== 'admitted') {
      return surprise(`state ${state}`, r);
    }
    // Admitted by the join's answer, which carries no pass: ask for it now.
    wait(state === 'admitted' ? 0 : retry);
    r = http.get(`${waitroom}/w/${sale}/status`, {
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
}

// One line `report-buyer {json}` on the console for k6/lib/report_check.py, which compares
// the sale's report with what the buyers saw: `line` is waitForPass's answer (null: the join
// itself failed, nothing to record), `ordered` and `paid` what came of it.
export function reportBuyer(line, ordered, paid) {
  if (line === null) {
    return;
  }
  const record = {
    join_sent: line.joinSent,
    join_answered: line.joinAnswered,
    opens_at: line.opensAt,
    // sold_out or closed: the door answered without a place (the report counts places).
    join_state: line.joinState,
    admitted: !!line.pass,
    pass_expires_at: line.passExpiresAt || null,
    ordered: !!ordered,
    paid: !!paid,
  };
  console.log(`report-buyer ${JSON.stringify(record)}`);
}

// Orders one unit with the pass: the order id, {soldOut: true}, or null (unexpected).
export function placeOrder(api, sale, token, pass, key) {
  const r = http.post(`${api}/api/orders`, JSON.stringify({ sale_id: sale, quantity: 1 }), {
    headers: {
      Authorization: `Bearer ${token}`,
      'Dropline-Pass': pass,
      'Idempotency-Key': key,
      'Content-Type': 'application/json',
    },
    tags: { name: 'order' },
  });
  if (r.status === 409 && errorCode(r) === 'sold_out') {
    // Admitted while the last units were still held by others, which then sold.
    return { soldOut: true };
  }
  if (!check(r, { 'order: 201 held': (res) => res.status === 201 && res.json('status') === 'held' })) {
    return surprise('order', r);
  }
  return { order: r.json('id') };
}

// Pays the order and polls it until it is PAID: returns the milliseconds from the pay request
// to PAID, or null after an answer a buyer should not get (including the order ending any
// other way, or still paying after 30 s).
export function payUntilPaid(api, token, order) {
  const headers = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
  const started = Date.now();
  let r = http.post(`${api}/api/orders/${order}/pay`, JSON.stringify({ card_token: 'tok_visa' }), {
    headers,
    tags: { name: 'pay' },
  });
  if (!check(r, { 'pay: 202': (res) => res.status === 202 })) {
    return surprise('pay', r);
  }
  for (let i = 0; i < 300; i++) {
    sleep(0.1);
    r = http.get(`${api}/api/orders/${order}`, { headers, tags: { name: 'order_status' } });
    if (r.status !== 200) {
      return surprise('order status', r);
    }
    const status = r.json('status');
    if (status === 'paid') {
      return Date.now() - started;
    }
    if (status !== 'paying') {
      return surprise(`order ended ${status}`, r);
    }
  }
  return surprise('order still paying after 30 s', r);
}
