/*
 * Dropline control room: one sale, live, for administrators. No framework, no build step, no
 * chart library: the charts are drawn on <canvas> below.
 *
 * The server puts the sale id, the api's address and the data URL in
 * <script id="dl-config" type="application/json">. The page signs in through admin.js (loaded
 * first: the api's login or a pasted admin access token, one refresh on a 401, signed out on a
 * 403; tokens shared with the console and the report in this tab's sessionStorage), then polls
 * GET /w/{sale}/control/data every second with the access token, keeps the last ten minutes of
 * answers in memory, and draws them.
 *
 * document.body carries data-view (signin | room), data-state (the sale's state) and
 * data-samples (samples kept) for tests and custom styles.
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
  const DATA_URL = String(config.data_url);
  const WINDOW_MS = 10 * 60 * 1000;
  const MIN_SPAN_MS = 30 * 1000;
  const POLL_MS = 1000;
  const MAX_BACKOFF_MS = 15000;
  const STATE_COLORS = {
    scheduled: '#2b4f7a', open: '#1f6f4a', paused: '#8a6412', sold_out: '#7a2e2e', closed: '#555'
  };

  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim() || '#888';

  /** Samples, oldest first: one per answer with a new server time. */
  const history = [];
  let generation = 0;

  // ------------------------------------------------------------------------------------------
  // Sign-in (admin.js)

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

  // ------------------------------------------------------------------------------------------
  // Polling

  function start() {
    generation += 1;
    admin.show(true);
    poll(generation, 0);
  }

  async function poll(gen, failures) {
    if (gen !== generation || !admin.signedIn()) return;
    let next = POLL_MS;
    try {
      const answer = await admin.call('GET', DATA_URL);
      if (gen !== generation) return;
      const body = answer.body;
      if (answer.status === 200 && body) {
        record(body);
        render(body);
        setText('notice', '');
        failures = 0;
      } else if (answer.status === 404) {
        setText('notice', 'No such sale, or it is not armed yet: ' + errorText(body, 404));
        next = 5000;
      } else {
        failures += 1;
        setText('notice', 'The waiting room answered ' + errorText(body, answer.status) + '; retrying…');
      }
    } catch (e) {
      if (e.signedOut) return;
      failures += 1;
      setText('notice', 'Cannot reach the waiting room (' + e.message + '); retrying…');
    }
    if (failures > 0) next = Math.min(MAX_BACKOFF_MS, POLL_MS * Math.pow(2, failures - 1));
    setTimeout(() => poll(gen, failures), next);
  }

  /** Keeps one sample per new server time, the last WINDOW_MS of them. */
  function record(d) {
    const prev = history[history.length - 1];
    if (prev && d.now_ms <= prev.t) return;
    let observed = null;
    if (prev && d.queue.admitted_total >= prev.admitted) {
      observed = (d.queue.admitted_total - prev.admitted) * 1000 / (d.now_ms - prev.t);
    }
    history.push({
      t: d.now_ms,
      state: d.state,
      queue: d.queue.length,
      admitted: d.queue.admitted_total,
      observed: observed,
      measured: d.queue.admit_rate,
      configured: d.queue.admit_per_second,
      active: d.queue.active,
      maxActive: d.queue.max_active,
      available: d.stock.available,
      held: d.stock.held,
      sold: d.stock.sold,
      ordersHeld: d.orders.held,
      ordersPaying: d.orders.paying
    });
    while (history.length && history[0].t < d.now_ms - WINDOW_MS) history.shift();
  }

  // ------------------------------------------------------------------------------------------
  // Figures

  const int = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US'));
  const rate = (v) => (v === null || v === undefined ? '–' : (Math.round(v * 10) / 10).toLocaleString('en-US'));

  function render(d) {
    const last = history[history.length - 1];
    document.body.dataset.state = d.state;
    document.body.dataset.samples = String(history.length);
    const state = $('fig-state');
    state.textContent = d.state.replace('_', ' ');
    state.dataset.state = d.state;
    setText('clock', new Date(d.now_ms).toLocaleTimeString('en-GB'));
    setText('fig-queue', int(d.queue.length));
    setText('fig-skipped', int(d.queue.skipped));
    setText('fig-admit-now', rate(last ? last.observed : null));
    setText('fig-rate', rate(d.queue.admit_rate));
    setText('fig-rate-set', int(d.queue.admit_per_second));
    setText('fig-active', int(d.queue.active));
    setText('fig-max-active', d.queue.max_active === null ? 'none' : int(d.queue.max_active));
    setText('fig-admitted-total', int(d.queue.admitted_total));
    setText('fig-abandoned', int(d.queue.abandoned_total));
    setText('fig-available', int(d.stock.available));
    setText('fig-stock-total', int(d.stock.total));
    setText('fig-held', int(d.stock.held));
    setText('fig-sold', int(d.stock.sold));
    setText('fig-orders-live', int(d.orders.live));
    setText('fig-orders-held', int(d.orders.held));
    setText('fig-orders-paying', int(d.orders.paying));
    setText('samples', String(history.length));
    drawAll();
  }

  function drawAll() {
    if (!history.length) return;
    lineChart('chart-queue', [{ key: 'queue', color: color('--c1') }]);
    lineChart('chart-admission', [
      { key: 'observed', color: color('--c1') },
      { key: 'measured', color: color('--c2') },
      { key: 'configured', color: color('--c3'), dash: [4, 4] }
    ]);
    lineChart('chart-active', [
      { key: 'active', color: color('--c1') },
      { key: 'maxActive', color: color('--c3'), dash: [4, 4] }
    ]);
    lineChart('chart-stock', [
      { key: 'sold', color: color('--sold') },
      { key: 'held', color: color('--held') },
      { key: 'available', color: color('--avail') }
    ], { stacked: true });
    lineChart('chart-orders', [
      { key: 'ordersHeld', color: color('--c1') },
      { key: 'ordersPaying', color: color('--c2') }
    ]);
    stateChart('chart-state');
  }

  window.addEventListener('resize', drawAll);

  // ------------------------------------------------------------------------------------------
  // Charts

  const PAD = { left: 44, right: 8, top: 8, bottom: 18 };

  /** The canvas sized to its box at the screen's pixel ratio, cleared. */
  function surface(id) {
    const canvas = $(id);
    if (!canvas || !canvas.getContext) return null;
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return null;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = '11px system-ui, sans-serif';
    return { ctx, w, h };
  }

  /** The time span shown: the last ten minutes, at least half a minute. */
  function span() {
    const end = history[history.length - 1].t;
    const start = Math.max(end - WINDOW_MS, Math.min(history[0].t, end - MIN_SPAN_MS));
    return { start, end };
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * p >= v) return m * p;
    }
    return 10 * p;
  }

  function timeLabel(ms) {
    return new Date(ms).toLocaleTimeString('en-GB');
  }

  /** Axes, grid and time labels; answers the value → pixel mappings. */
  function frame(s, max) {
    const { ctx, w, h } = s;
    const { start, end } = span();
    const x0 = PAD.left;
    const x1 = w - PAD.right;
    const y0 = h - PAD.bottom;
    const y1 = PAD.top;
    const x = (t) => x0 + (x1 - x0) * (t - start) / Math.max(1, end - start);
    const y = (v) => y0 - (y0 - y1) * v / max;
    ctx.strokeStyle = color('--line');
    ctx.fillStyle = color('--muted');
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const f of [0, 0.5, 1]) {
      const v = max * f;
      const py = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x0, py);
      ctx.lineTo(x1, py);
      ctx.stroke();
      const label = v >= 10000 ? Math.round(v / 1000) + 'k' : String(Math.round(v * 10) / 10);
      ctx.fillText(label, x0 - 4, py);
    }
    ctx.textBaseline = 'alphabetic';
    ctx.textAlign = 'left';
    ctx.fillText(timeLabel(start), x0, h - 4);
    ctx.textAlign = 'right';
    ctx.fillText(timeLabel(end), x1, h - 4);
    return { x, y, x0, x1, y0 };
  }

  /** Lines (or stacked areas) of `series` over the history; a null value breaks a line. */
  function lineChart(id, series, opts) {
    const s = surface(id);
    if (!s) return;
    const stacked = !!(opts && opts.stacked);
    const { start } = span();
    const shown = history.filter((p) => p.t >= start);
    let top = 0;
    for (const p of shown) {
      let sum = 0;
      for (const one of series) {
        const v = p[one.key];
        if (typeof v === 'number') {
          sum = stacked ? sum + v : Math.max(sum, v);
        }
      }
      top = Math.max(top, sum);
    }
    const f = frame(s, niceMax(top));
    const { ctx } = s;
    if (stacked) {
      const base = shown.map(() => 0);
      for (const one of series) {
        const upper = shown.map((p, i) => base[i] + (typeof p[one.key] === 'number' ? p[one.key] : 0));
        ctx.beginPath();
        shown.forEach((p, i) => {
          const px = f.x(p.t);
          if (i === 0) ctx.moveTo(px, f.y(upper[i]));
          else ctx.lineTo(px, f.y(upper[i]));
        });
        for (let i = shown.length - 1; i >= 0; i -= 1) ctx.lineTo(f.x(shown[i].t), f.y(base[i]));
        ctx.closePath();
        ctx.globalAlpha = 0.75;
        ctx.fillStyle = one.color;
        ctx.fill();
        ctx.globalAlpha = 1;
        upper.forEach((v, i) => { base[i] = v; });
      }
      return;
    }
    for (const one of series) {
      ctx.beginPath();
      ctx.strokeStyle = one.color;
      ctx.lineWidth = 2;
      ctx.setLineDash(one.dash || []);
      let drawing = false;
      for (const p of shown) {
        const v = p[one.key];
        if (typeof v !== 'number') {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(f.x(p.t), f.y(v));
        else ctx.moveTo(f.x(p.t), f.y(v));
        drawing = true;
      }
      if (shown.length === 1 && typeof shown[0][one.key] === 'number') {
        ctx.lineTo(f.x(shown[0].t) + 2, f.y(shown[0][one.key]));
      }
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  /** The sale's state over time as coloured bands, the current one named. */
  function stateChart(id) {
    const s = surface(id);
    if (!s) return;
    const { ctx, w, h } = s;
    const { start, end } = span();
    const x0 = PAD.left;
    const x1 = w - PAD.right;
    const x = (t) => x0 + (x1 - x0) * (t - start) / Math.max(1, end - start);
    const shown = history.filter((p) => p.t >= start);
    const bandTop = PAD.top + 20;
    const bandHeight = Math.max(20, h - PAD.bottom - bandTop - 8);
    shown.forEach((p, i) => {
      const next = shown[i + 1];
      // Whole pixels, so that neighbouring bands leave no seams.
      const a = Math.floor(x(p.t));
      const b = Math.ceil(next ? x(next.t) : Math.max(a + 2, x1));
      ctx.fillStyle = STATE_COLORS[p.state] || '#444';
      ctx.fillRect(a, bandTop, Math.max(1, b - a), bandHeight);
    });
    const last = shown[shown.length - 1];
    let since = last.t;
    for (let i = shown.length - 1; i >= 0 && shown[i].state === last.state; i -= 1) since = shown[i].t;
    ctx.fillStyle = color('--fg');
    ctx.font = '600 13px system-ui, sans-serif';
    ctx.textAlign = 'left';
    ctx.textBaseline = 'alphabetic';
    const seconds = Math.round((last.t - since) / 1000);
    ctx.fillText(last.state.replace('_', ' ') + ' for ' + seconds + ' s', x0, PAD.top + 12);
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = color('--muted');
    ctx.fillText(timeLabel(start), x0, h - 4);
    ctx.textAlign = 'right';
    ctx.fillText(timeLabel(end), x1, h - 4);
  }

  // ------------------------------------------------------------------------------------------

  admin.begin();
})();
