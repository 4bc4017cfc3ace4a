/*
 * Dropline sale report: one sale's post-sale report for administrators, charts drawn as inline
 * SVG by this file. No framework, no build step, no chart library.
 *
 * The server puts the sale id, the api's address and the report URL in
 * <script id="dl-config" type="application/json">. The page signs in through the api like the
 * control room (POST {api}/api/auth/login, or a pasted admin access token; tokens in
 * sessionStorage, shared with the control room), then reads
 * GET {api}/api/admin/sales/{sale}/report once, and again every 10 s while the sale is not
 * over. document.body carries data-view (signin | room) and data-loaded (1 once drawn).
 */
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  let config;
  try {
    config = JSON.parse($('dl-config').textContent);
  } catch (e) {
    return;
  }
  const API = String(config.api_base_url || '').replace(/\/+$/, '');
  const REPORT_URL = API + String(config.report_path);
  const AUTH_KEY = 'dropline.control.auth';
  const REFRESH_MS = 10000;
  const SVG = 'http://www.w3.org/2000/svg';
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim() || '#888';

  let current = null;
  try { current = JSON.parse(sessionStorage.getItem(AUTH_KEY)) || null; } catch (e) { current = null; }
  let generation = 0;

  function saveAuth(auth) {
    try {
      if (auth) sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth));
      else sessionStorage.removeItem(AUTH_KEY);
    } catch (e) { /* storage refused */ }
    current = auth;
  }
  function show(view) {
    document.body.dataset.view = view;
    $('view-signin').hidden = view !== 'signin';
    $('view-room').hidden = view !== 'room';
    $('signout').hidden = view !== 'room';
  }
  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }
  function errorText(body, status) {
    if (body && body.error && body.error.message) return body.error.message;
    return 'HTTP ' + status;
  }
  async function postJson(path, body) {
    const response = await fetch(API + path, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body)
    });
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    return { status: response.status, body: json };
  }
  function signOut(message) {
    generation += 1;
    saveAuth(null);
    show('signin');
    setText('signin-error', message || '');
  }

  $('signin-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    setText('signin-error', '');
    $('signin-submit').disabled = true;
    try {
      const answer = await postJson('/api/auth/login', {
        email: $('signin-email').value.trim(), password: $('signin-password').value
      });
      if (answer.status !== 200 || !answer.body || !answer.body.access_token) {
        setText('signin-error', errorText(answer.body, answer.status));
        return;
      }
      $('signin-password').value = '';
      saveAuth({ access_token: answer.body.access_token, refresh_token: answer.body.refresh_token });
      start();
    } catch (e) {
      setText('signin-error', 'Cannot reach the api: ' + e.message);
    } finally {
      $('signin-submit').disabled = false;
    }
  });
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    $('token-input').value = '';
    saveAuth({ access_token: token, refresh_token: null });
    start();
  });
  $('signout').addEventListener('click', () => signOut(''));

  async function refresh() {
    if (!current || !current.refresh_token) return false;
    try {
      const answer = await postJson('/api/auth/refresh', { refresh_token: current.refresh_token });
      if (answer.status !== 200 || !answer.body || !answer.body.access_token) return false;
      saveAuth({ access_token: answer.body.access_token, refresh_token: answer.body.refresh_token });
      return true;
    } catch (e) {
      return false;
    }
  }

  function start() {
    generation += 1;
    show('room');
    load(generation);
  }

  async function load(gen) {
    if (gen !== generation || !current) return;
    let again = REFRESH_MS;
    try {
      const get = () => fetch(REPORT_URL, {
        headers: { Authorization: 'Bearer ' + current.access_token }, cache: 'no-store'
      });
      let response = await get();
      if (response.status === 401 && (await refresh())) response = await get();
      if (gen !== generation) return;
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (response.status === 200 && body) {
        render(body);
        setText('notice', '');
        if (body.state === 'closed' || body.state === 'sold_out') again = 0;
      } else if (response.status === 401) {
        signOut('Please sign in again (' + errorText(body, 401) + ').');
        return;
      } else if (response.status === 403) {
        signOut('This account is not an administrator: ' + errorText(body, 403));
        return;
      } else {
        setText('notice', 'The api answered ' + errorText(body, response.status) + '; retrying…');
      }
    } catch (e) {
      setText('notice', 'Cannot reach the api (' + e.message + '); retrying…');
    }
    if (again > 0) setTimeout(() => load(gen), again);
  }

  // ------------------------------------------------------------------------------------------
  // Inline SVG

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function canvas(id, height) {
    const box = $(id);
    while (box.firstChild) box.removeChild(box.firstChild);
    const svg = el('svg', { viewBox: '0 0 400 ' + height, role: 'img' });
    box.appendChild(svg);
    return svg;
  }
  const fmt = (v) => (v === null || v === undefined) ? '–' : String(v);
  const secs = (v) => (v === null || v === undefined) ? '–' : (Math.round(v * 10) / 10) + ' s';

  /** Lines over the series: each of `lines` = [field, colour]. */
  function lineChart(id, series, lines, marker) {
    const W = 400, H = 170, L = 34, B = 18, T = 6;
    const svg = canvas(id, H);
    const n = Math.max(1, series.length);
    let max = 1;
    for (const s of series) for (const [f] of lines) max = Math.max(max, s[f] || 0);
    const x = (t) => L + (W - L - 4) * (n <= 1 ? 0 : t / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    svg.appendChild(el('line', { x1: L, y1: H - B, x2: W - 4, y2: H - B, stroke: color('--line') }));
    svg.appendChild(el('text', { x: 2, y: T + 9, fill: color('--muted') }, String(max)));
    svg.appendChild(el('text', { x: 2, y: H - B, fill: color('--muted') }, '0'));
    svg.appendChild(el('text', { x: L, y: H - 4, fill: color('--muted') }, '0 s'));
    svg.appendChild(el('text', { x: W - 4, y: H - 4, fill: color('--muted'), 'text-anchor': 'end' }, (n - 1) + ' s'));
    if (marker !== null && marker !== undefined && marker >= 0 && marker < n) {
      svg.appendChild(el('line', { x1: x(marker), y1: T, x2: x(marker), y2: H - B, stroke: color('--bad'), 'stroke-dasharray': '4 3' }));
      svg.appendChild(el('text', { x: x(marker) + 3, y: T + 9, fill: color('--bad') }, 'sold out'));
    }
    for (const [f, c] of lines) {
      const points = series.map((s, i) => x(i).toFixed(1) + ',' + y(s[f] || 0).toFixed(1)).join(' ');
      svg.appendChild(el('polyline', { points, fill: 'none', stroke: c, 'stroke-width': 1.5 }));
    }
  }

  /** Horizontal bars: rows of [label, value, colour]. */
  function bars(id, rows) {
    const W = 400, row = 22, L = 130;
    const svg = canvas(id, Math.max(row, rows.length * row) + 4);
    let max = 1;
    for (const [, v] of rows) max = Math.max(max, v || 0);
    rows.forEach(([label, v, c], i) => {
      const y = i * row + 4;
      const w = (W - L - 60) * ((v || 0) / max);
      svg.appendChild(el('text', { x: 0, y: y + 13, fill: color('--fg') }, label));
      svg.appendChild(el('rect', { x: L, y, width: Math.max(1, w).toFixed(1), height: row - 8, fill: c, rx: 2 }));
      svg.appendChild(el('text', { x: L + w + 6, y: y + 13, fill: color('--muted') }, fmt(v)));
    });
  }

  function render(r) {
    document.body.dataset.loaded = '1';
    const state = $('fig-state');
    state.textContent = String(r.state).replace('_', ' ');
    state.dataset.state = r.state;
    setText('fig-opens', new Date(r.opens_at).toLocaleString());
    const soldOutAt = r.sold_out_at ? (Date.parse(r.sold_out_at) - Date.parse(r.opens_at)) / 1000 : null;
    setText('fig-sold-out', soldOutAt === null ? 'no' : 'after ' + Math.round(soldOutAt) + ' s');
    const line = r.time_in_line || {};
    setText('fig-p50', secs(line.p50));
    setText('fig-p90', secs(line.p90));
    setText('fig-p99', secs(line.p99));
    setText('fig-waits', fmt(line.count));
    const eta = r.eta_accuracy || {};
    setText('fig-eta-share', eta.share_within === null || eta.share_within === undefined ? '–' : Math.round(eta.share_within * 100) + '%');
    setText('fig-eta-median', secs(eta.median_abs_error_seconds));
    setText('fig-eta-count', fmt(eta.count));
    const f = r.funnel || {};
    setText('fig-paid', fmt(f.paid));
    setText('fig-joined', fmt(f.joined));

    const series = r.series || [];
    lineChart('chart-rates', series, [['arrivals', color('--c1')], ['admissions', color('--c2')], ['orders', color('--sold')]],
      soldOutAt === null ? null : Math.floor(soldOutAt));
    lineChart('chart-queue', series, [['queue_length', color('--c1')]], soldOutAt === null ? null : Math.floor(soldOutAt));
    bars('chart-line', [['p50', line.p50, color('--c1')], ['p90', line.p90, color('--c2')], ['p99', line.p99, color('--bad')]]);
    bars('chart-funnel', [['joined', f.joined, color('--c1')], ['admitted', f.admitted, color('--c2')],
      ['ordered', f.ordered, color('--held')], ['paid', f.paid, color('--sold')]]);
    bars('chart-left', [['left the line', f.left_line, color('--c3')], ['abandoned', f.abandoned, color('--c3')],
      ['pass unused', f.pass_expired_unused, color('--c3')], ['hold expired', f.hold_expired, color('--c2')],
      ['cancelled', f.cancelled, color('--c2')], ['payment failed', f.payment_failed, color('--bad')],
      ['refunded', f.refunded, color('--bad')]]);
    const x = r.refusals || {};
    bars('chart-refusals', [['rate limited', x.rate_limited, color('--c2')], ['queue full', x.queue_full, color('--c2')],
      ['proof of work', x.pow, color('--c2')], ['access code', x.access_code, color('--c2')]]);
  }

  if (current) start(); else show('signin');
})();
