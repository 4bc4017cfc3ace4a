/*
 * Dropline sale report: one sale's post-sale report for administrators, charts drawn as inline
 * SVG by this file. No framework, no build step, no chart library.
 *
 * The server puts the sale id, the api's address and the report URL in
 * <script id="dl-config" type="application/json">. The page signs in through admin.js (loaded
 * first; the api's login or a pasted admin access token, tokens shared with the console and the
 * control room in this tab's sessionStorage), then reads
 * GET {api}/api/admin/sales/{sale}/report every 10 s until the sale is closed and the answer
 * stops changing. document.body carries data-view (signin | room) and data-loaded (1 once drawn).
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
  const REFRESH_MS = 10000;
  const SVG = 'http://www.w3.org/2000/svg';
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim() || '#888';

  let generation = 0;

  const admin = DroplineAdmin.session({
    api: API,
    view: 'room',
    onStart: () => start(),
    onSignOut: () => { generation += 1; }
  });
  const errorText = DroplineAdmin.errorText;

  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }

  function start() {
    generation += 1;
    admin.show(true);
    load(generation);
  }

  /**
   * Whether the report can stop refreshing: the sale is closed and the answer is the same as the
   * last one (the MySQL copy trails the live sale by a few seconds, and a sold-out sale is not
   * over: holds that expire give units back, and paying orders still end).
   */
  let lastAnswer = null;
  function settled(body) {
    const text = JSON.stringify(body);
    const same = text === lastAnswer;
    lastAnswer = text;
    return body.state === 'closed' && same;
  }

  async function load(gen) {
    if (gen !== generation || !admin.signedIn()) return;
    let again = REFRESH_MS;
    try {
      const answer = await admin.call('GET', REPORT_URL);
      if (gen !== generation) return;
      const body = answer.body;
      if (answer.status === 200 && body) {
        render(body);
        setText('notice', '');
        if (settled(body)) again = 0;
      } else {
        setText('notice', 'The api answered ' + errorText(body, answer.status) + '; retrying…');
      }
    } catch (e) {
      if (e.signedOut) return;
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

  admin.begin();
})();
