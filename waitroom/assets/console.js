/*
 * Dropline console: products and sales for administrators (#24). No framework, no build step.
 *
 * The server puts the api's address in <script id="dl-config" type="application/json">. The
 * page signs in through admin.js (loaded first): the api's login, tokens in sessionStorage
 * shared with the control room and the report (the links to them open with this tab's copy),
 * one refresh on a 401 before asking to sign in again.
 *
 * It calls: GET {api}/api/products, /api/sales, /api/sales/{id}; POST and PATCH
 * {api}/api/admin/products[/{id}] and /api/admin/sales[/{id}]; POST
 * {api}/api/admin/sales/{id}/codes; GET {api}/api/admin/sales/{id}/events (paged) and /audit;
 * and this waiting room's GET /w/{id}/control/data for the live figures (in line, admitted,
 * units sold). Every change to a sale goes through a confirmation dialog showing before → after.
 * A form shows the API's own error message (DESIGN §9's error.message) and keeps what was typed.
 *
 * document.body carries data-view (signin | console) and data-panel (sales | products | sale)
 * for tests and custom styles; the sale view carries data-sale (its id) and data-state.
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
  const REFRESH_MS = 5000;
  const TRAIL_PAGE = 50;

  let generation = 0;
  let products = [];
  let sales = [];
  /** The sale shown in the sale panel (as GET /api/sales/{id} answered), and its trail cursor. */
  let sale = null;
  /** The shown sale's last live figures (GET /w/{id}/control/data), or null. */
  let saleFigures = null;
  let trailCursor = null;
  let trailCount = 0;
  /** The sale being edited by the sale form (null: a new sale), the product by the product form. */
  let editingSale = null;
  let editingProduct = null;

  // ------------------------------------------------------------------------------------------
  // Sign-in and calls (admin.js)

  const admin = DroplineAdmin.session({
    api: API,
    view: 'console',
    also: ['tabs'],
    onStart: () => start(),
    onSignOut: () => { generation += 1; }
  });
  const errorText = DroplineAdmin.errorText;

  /**
   * An authenticated call (the api's, or this origin's with `local`; a 403 from this origin
   * does not sign out). Throws when it signs out (admin.js).
   */
  function call(method, path, body, local) {
    return admin.call(method, (local ? '' : API) + path, body, { keep403: !!local });
  }

  function setText(id, text) {
    const el = $(id);
    if (el) el.textContent = text;
  }

  function notice(text) {
    setText('notice', text || '');
  }

  // ------------------------------------------------------------------------------------------
  // Small helpers

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = v;
      else if (k === 'class') node.className = v;
      else if (k.startsWith('data-')) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children || []) if (child) node.appendChild(child);
    return node;
  }

  function money(amount, currency) {
    return String(amount) + ' ' + String(currency || '');
  }

  function shortTime(iso) {
    if (!iso) return '–';
    return String(iso).replace('T', ' ').replace(/\.\d+/, '').replace(/(\+00:00|Z)$/, '');
  }

  function show_(value) {
    if (value === null || value === undefined) return '–';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  /** A form field's value for the API: '' → absent, an integer → a number, else the text. */
  function fieldValue(raw) {
    const text = String(raw).trim();
    if (text === '') return undefined;
    if (/^-?\d+$/.test(text)) return Number(text);
    return text;
  }

  function formError(form, text) {
    const p = form.querySelector('[data-error]');
    if (p) p.textContent = text || '';
    form.dataset.error = text ? '1' : '';
  }

  function isoIn(minutes) {
    const d = new Date(Date.now() + minutes * 60000);
    d.setUTCSeconds(0, 0);
    return d.toISOString().replace('.000Z', 'Z');
  }

  // ------------------------------------------------------------------------------------------
  // Confirmation: before → after of each field, Confirm or Cancel

  function confirmChanges(title, rows) {
    const dialog = $('confirm');
    setText('confirm-title', title);
    const list = $('confirm-body');
    list.textContent = '';
    for (const [field, before, after] of rows) {
      list.appendChild(el('li', {}, [
        el('b', { text: field + ': ' }),
        el('span', { class: 'before', text: show_(before) }),
        el('span', { text: ' → ' }),
        el('span', { class: 'after', text: show_(after) })
      ]));
    }
    return new Promise((resolve) => {
      const done = (ok) => {
        $('confirm-ok').onclick = null;
        $('confirm-cancel').onclick = null;
        dialog.oncancel = null;
        if (dialog.open) dialog.close();
        resolve(ok);
      };
      $('confirm-ok').onclick = () => done(true);
      $('confirm-cancel').onclick = () => done(false);
      dialog.oncancel = () => done(false);
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else dialog.setAttribute('open', '');
    });
  }

  // ------------------------------------------------------------------------------------------
  // Panels

  function panel(name) {
    document.body.dataset.panel = name;
    $('panel-sales').hidden = name !== 'sales';
    $('panel-products').hidden = name !== 'products';
    $('panel-sale').hidden = name !== 'sale';
    $('tab-sales').setAttribute('aria-pressed', String(name === 'sales' || name === 'sale'));
    $('tab-products').setAttribute('aria-pressed', String(name === 'products'));
  }

  $('tab-sales').addEventListener('click', () => { panel('sales'); loadSales(); });
  $('tab-products').addEventListener('click', () => { panel('products'); loadProducts(); });
  $('sale-back').addEventListener('click', () => { sale = null; panel('sales'); loadSales(); });
  $('sales-refresh').addEventListener('click', () => loadSales());

  function start() {
    generation += 1;
    admin.show(true);
    panel('sales');
    loadProducts();
    loadSales();
    tick(generation);
  }

  function tick(gen) {
    setTimeout(async () => {
      if (gen !== generation || !admin.signedIn()) return;
      try {
        if (document.body.dataset.panel === 'sales' && $('sale-form').hidden) await loadSales();
        if (document.body.dataset.panel === 'sale' && sale) await loadSale(sale.id, false);
      } catch (e) { /* shown by the loaders */ }
      tick(gen);
    }, REFRESH_MS);
  }

  // ------------------------------------------------------------------------------------------
  // Products

  async function loadProducts() {
    try {
      const all = [];
      let cursor = null;
      for (let i = 0; i < 10; i++) {
        const q = '/api/products?limit=100' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : '');
        const answer = await call('GET', q);
        if (answer.status !== 200 || !answer.body) {
          notice('Products: ' + errorText(answer.body, answer.status));
          return;
        }
        all.push(...answer.body.items);
        cursor = answer.body.next_cursor;
        if (!cursor) break;
      }
      products = all;
      renderProducts();
      fillProductSelect();
    } catch (e) {
      if (!e.signedOut) notice('Cannot reach the api: ' + e.message);
    }
  }

  function renderProducts() {
    const body = $('products-table').tBodies[0];
    body.textContent = '';
    for (const p of products) {
      const edit = el('button', { type: 'button', class: 'secondary small', text: 'Edit' });
      edit.addEventListener('click', () => openProductForm(p));
      body.appendChild(el('tr', { 'data-id': p.id }, [
        el('td', { text: p.name, title: p.description || '' }),
        el('td', { text: money(p.price, p.currency) }),
        el('td', { text: shortTime(p.created_at) }),
        el('td', {}, [edit])
      ]));
    }
  }

  function fillProductSelect() {
    const select = $('sale-form').elements.product_id;
    const chosen = select.value;
    select.textContent = '';
    for (const p of products) {
      select.appendChild(el('option', { value: p.id, text: p.name + ' · ' + money(p.price, p.currency) }));
    }
    if (chosen) select.value = chosen;
  }

  function openProductForm(product) {
    editingProduct = product || null;
    const form = $('product-form');
    formError(form, '');
    setText('product-form-title', product ? 'Edit ' + product.name : 'New product');
    form.elements.name.value = product ? product.name : '';
    form.elements.description.value = product ? (product.description || '') : '';
    form.elements.price.value = product ? String(product.price) : '';
    form.elements.currency.value = product ? product.currency : '';
    form.hidden = false;
    form.elements.name.focus();
  }

  $('product-new').addEventListener('click', () => openProductForm(null));
  $('product-form').querySelector('[data-cancel]').addEventListener('click', () => {
    $('product-form').hidden = true;
  });

  $('product-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.target;
    formError(form, '');
    const f = form.elements;
    const body = {};
    const wanted = {
      name: f.name.value,
      description: f.description.value,
      price: fieldValue(f.price.value),
      currency: fieldValue(f.currency.value)
    };
    if (editingProduct) {
      if (wanted.name !== editingProduct.name) body.name = wanted.name;
      if (wanted.description.trim() !== (editingProduct.description || '')) body.description = wanted.description.trim() === '' ? null : wanted.description;
      if (wanted.price !== editingProduct.price) body.price = wanted.price === undefined ? null : wanted.price;
      if (wanted.currency !== undefined && wanted.currency !== editingProduct.currency) body.currency = wanted.currency;
      if (Object.keys(body).length === 0) { form.hidden = true; return; }
    } else {
      body.name = wanted.name;
      if (wanted.description.trim() !== '') body.description = wanted.description;
      body.price = wanted.price === undefined ? null : wanted.price;
      if (wanted.currency !== undefined) body.currency = wanted.currency;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const answer = editingProduct
        ? await call('PATCH', '/api/admin/products/' + editingProduct.id, body)
        : await call('POST', '/api/admin/products', body);
      if (answer.status !== 200 && answer.status !== 201) {
        formError(form, errorText(answer.body, answer.status));
        return;
      }
      form.hidden = true;
      notice((editingProduct ? 'Saved ' : 'Created ') + answer.body.name + '.');
      await loadProducts();
    } catch (e) {
      if (!e.signedOut) formError(form, 'Cannot reach the api: ' + e.message);
    } finally {
      button.disabled = false;
    }
  });

  // ------------------------------------------------------------------------------------------
  // Sales list

  /** This waiting room's live figures of one sale, or null. */
  async function figures(id) {
    try {
      const answer = await call('GET', '/w/' + id + '/control/data', undefined, true);
      return answer.status === 200 ? answer.body : null;
    } catch (e) {
      return null;
    }
  }

  async function loadSales() {
    try {
      const answer = await call('GET', '/api/sales?limit=100');
      if (answer.status !== 200 || !answer.body) {
        notice('Sales: ' + errorText(answer.body, answer.status));
        return;
      }
      sales = answer.body.items;
      const figs = await Promise.all(sales.map((s) => figures(s.id)));
      renderSales(figs);
    } catch (e) {
      if (!e.signedOut) notice('Cannot reach the api: ' + e.message);
    }
  }

  function renderSales(figs) {
    const body = $('sales-table').tBodies[0];
    body.textContent = '';
    sales.forEach((s, i) => {
      const f = figs[i];
      const open = el('button', { type: 'button', class: 'small', text: 'Open' });
      open.addEventListener('click', () => openSale(s.id));
      body.appendChild(el('tr', { 'data-id': s.id, 'data-state': s.state }, [
        el('td', { text: s.product.name + (s.mode === 'draw' ? ' (draw)' : '') }),
        el('td', {}, [el('span', { class: 'state', 'data-state': s.state, text: s.state })]),
        el('td', { text: shortTime(s.opens_at) }),
        el('td', { class: 'n', text: String(s.stock_total) }),
        el('td', { class: 'n', text: String(s.available) }),
        el('td', { class: 'n', text: f ? String(f.queue.length) : '–' }),
        el('td', { class: 'n', text: f ? String(f.queue.admitted_total) : '–' }),
        el('td', { class: 'n', text: f ? String(f.stock.sold) : '–' }),
        el('td', {}, [open])
      ]));
    });
  }

  // ------------------------------------------------------------------------------------------
  // Sale form: create, or edit while scheduled

  const SALE_FIELDS = ['product_id', 'mode', 'stock', 'per_user_limit', 'hold_seconds', 'opens_at',
    'closes_at', 'admit_per_second', 'max_active', 'entries_close_at', 'claim_seconds',
    'pow_difficulty', 'groups', 'presale_only_until', 'notice'];
  const NULLABLE = ['closes_at', 'max_active', 'presale_only_until', 'notice'];

  function modeShown() {
    const form = $('sale-form');
    const mode = form.elements.mode.value;
    for (const set of form.querySelectorAll('fieldset[data-mode]')) set.hidden = set.dataset.mode !== mode;
  }
  $('sale-form').elements.mode.addEventListener('change', modeShown);

  /** A sale's current value of a form field, as the form shows it. */
  function saleField(s, name) {
    switch (name) {
      case 'product_id': return s.product.id;
      case 'stock': return String(s.stock_total);
      case 'groups': return (s.groups || []).join(', ');
      case 'entries_close_at': return s.draw ? s.draw.entries_close_at : '';
      case 'claim_seconds': return s.draw ? String(s.draw.claim_seconds) : '';
      default: {
        const v = s[name];
        return v === null || v === undefined ? '' : String(v);
      }
    }
  }

  function openSaleForm(s) {
    editingSale = s || null;
    const form = $('sale-form');
    formError(form, '');
    fillProductSelect();
    setText('sale-form-title', s ? 'Edit the scheduled sale' : 'New sale');
    for (const name of SALE_FIELDS) {
      const input = form.elements[name];
      if (!input) continue;
      input.value = s ? saleField(s, name) : '';
    }
    form.elements.mode.disabled = !!s;
    if (!s) {
      form.elements.mode.value = 'fcfs';
      form.elements.opens_at.value = isoIn(10);
      if (products.length) form.elements.product_id.value = products[0].id;
    }
    modeShown();
    form.hidden = false;
    if (s) panel('sales');
    form.scrollIntoView({ block: 'start' });
  }

  $('sale-new').addEventListener('click', () => openSaleForm(null));
  $('sale-form').querySelector('[data-cancel]').addEventListener('click', () => {
    $('sale-form').hidden = true;
    if (editingSale) openSale(editingSale.id);
  });

  function groupsValue(raw) {
    const text = String(raw).trim();
    if (text === '') return [];
    return text.split(',').map((g) => g.trim()).filter((g) => g !== '');
  }

  $('sale-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.target;
    formError(form, '');
    const f = form.elements;
    const mode = f.mode.value;
    const skip = mode === 'draw' ? ['admit_per_second', 'max_active'] : ['entries_close_at', 'claim_seconds'];
    const body = {};
    const rows = [];
    for (const name of SALE_FIELDS) {
      if (skip.includes(name) || (editingSale && name === 'mode')) continue;
      const raw = f[name].value;
      if (editingSale) {
        const was = saleField(editingSale, name);
        if (String(raw).trim() === was) continue;
        let value;
        if (name === 'groups') value = groupsValue(raw);
        else if (name === 'product_id' || name === 'notice') value = String(raw).trim();
        else value = fieldValue(raw);
        if (value === undefined || value === '') {
          if (!NULLABLE.includes(name)) continue;
          value = null;
        }
        body[name] = value;
        rows.push([name, was === '' ? null : was, value]);
      } else {
        let value;
        if (name === 'groups') value = groupsValue(raw);
        else if (name === 'product_id' || name === 'mode' || name === 'notice') value = String(raw).trim();
        else value = fieldValue(raw);
        if (value === undefined || value === '' || (Array.isArray(value) && value.length === 0)) continue;
        body[name] = value;
      }
    }
    if (editingSale) {
      if (rows.length === 0) { formError(form, 'Nothing changed.'); return; }
      if (!(await confirmChanges('Change the scheduled sale?', rows))) return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const answer = editingSale
        ? await call('PATCH', '/api/admin/sales/' + editingSale.id, body)
        : await call('POST', '/api/admin/sales', body);
      if (answer.status !== 200 && answer.status !== 201) {
        formError(form, errorText(answer.body, answer.status));
        return;
      }
      form.hidden = true;
      notice((editingSale ? 'Saved the sale ' : 'Created the sale ') + answer.body.id + '.');
      editingSale = null;
      await openSale(answer.body.id);
    } catch (e) {
      if (!e.signedOut) formError(form, 'Cannot reach the api: ' + e.message);
    } finally {
      button.disabled = false;
    }
  });

  // ------------------------------------------------------------------------------------------
  // One sale: figures, live controls, codes, audit, trail

  async function openSale(id) {
    $('sale-form').hidden = true;
    setText('ctl-error', '');
    $('codes-result').hidden = true;
    $('audit-result').textContent = '';
    $('audit-result').dataset.ok = '';
    panel('sale');
    await loadSale(id, true);
    await loadTrail(true);
  }

  async function loadSale(id, fillInputs) {
    try {
      const [answer, f] = await Promise.all([call('GET', '/api/sales/' + id), figures(id)]);
      if (answer.status !== 200 || !answer.body) {
        notice('Sale: ' + errorText(answer.body, answer.status));
        return;
      }
      const s = answer.body;
      sale = s;
      saleFigures = f;
      renderSale(s, f, fillInputs);
    } catch (e) {
      if (!e.signedOut) notice('Cannot reach the api: ' + e.message);
    }
  }

  function renderSale(s, f, fillInputs) {
    const view = $('panel-sale');
    view.dataset.sale = s.id;
    view.dataset.state = s.state;
    setText('sale-title', s.product.name + ' · ' + money(s.product.price, s.product.currency));
    const state = $('sale-state');
    state.textContent = s.state.replace('_', ' ');
    state.dataset.state = s.state;
    setText('sale-id', s.id);
    $('link-control').href = '/w/' + s.id + '/control';
    $('link-report').href = '/w/' + s.id + '/report';
    $('link-page').href = '/w/' + s.id;
    setText('fig-stock', String(s.stock_total));
    setText('fig-available', String(s.available));
    setText('fig-queue', f ? String(f.queue.length) : '–');
    setText('fig-admitted', f ? String(f.queue.admitted_total) : '–');
    setText('fig-paid', f ? String(f.stock.sold) : '–');
    setText('fig-rate', s.mode === 'draw' ? '–' : String(s.admit_per_second));
    setText('fig-max-active', s.max_active === null ? 'no limit' : String(s.max_active));
    const dl = $('sale-settings');
    dl.textContent = '';
    const settings = [
      ['mode', s.mode], ['opens at', shortTime(s.opens_at)], ['closes at', shortTime(s.closes_at)],
      ['per-user limit', s.per_user_limit], ['hold seconds', s.hold_seconds],
      ['proof of work', s.pow_difficulty], ['groups', (s.groups || []).join(', ') || '–'],
      ['presale until', shortTime(s.presale_only_until)], ['notice', s.notice || '–']
    ];
    if (s.draw) settings.push(['entries close', shortTime(s.draw.entries_close_at)], ['claim seconds', s.draw.claim_seconds]);
    for (const [k, v] of settings) {
      dl.appendChild(el('dt', { text: k }));
      dl.appendChild(el('dd', { text: String(v) }));
    }
    if (fillInputs) {
      $('ctl-rate').value = String(s.admit_per_second);
      $('ctl-max-active').value = s.max_active === null ? '' : String(s.max_active);
      $('ctl-notice').value = s.notice || '';
    }
    const over = s.state === 'closed';
    $('ctl-pause').textContent = s.paused ? 'Resume' : 'Pause';
    $('ctl-pause').disabled = over;
    $('ctl-close').disabled = over;
    $('sale-edit').hidden = s.state !== 'scheduled';
    $('ctl-rate-form').hidden = s.mode === 'draw';
    $('ctl-max-form').hidden = s.mode === 'draw';
  }

  /** Confirms and sends one PATCH of the shown sale; refreshes the view and the trail. */
  async function change(rows, body) {
    setText('ctl-error', '');
    if (!sale) return;
    if (!(await confirmChanges('Change this sale?', rows))) return;
    try {
      const answer = await call('PATCH', '/api/admin/sales/' + sale.id, body);
      if (answer.status !== 200) {
        setText('ctl-error', errorText(answer.body, answer.status));
        return;
      }
      notice('Changed: ' + rows.map((r) => r[0]).join(', ') + '.');
      // The PATCH answers the sale after the change: shown as is, since a GET may still meet
      // another api replica's cached copy for a few seconds (and a Pause would then show
      // "Pause" again and send the same value twice).
      if (answer.body && answer.body.id === sale.id) {
        sale = answer.body;
        renderSale(sale, saleFigures, true);
      } else {
        await loadSale(sale.id, true);
      }
      await loadTrail(true);
    } catch (e) {
      if (!e.signedOut) setText('ctl-error', 'Cannot reach the api: ' + e.message);
    }
  }

  $('ctl-rate-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = fieldValue($('ctl-rate').value);
    change([['admit_per_second', sale && sale.admit_per_second, value]], { admit_per_second: value === undefined ? null : value });
  });
  $('ctl-max-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = fieldValue($('ctl-max-active').value);
    const next = value === undefined ? null : value;
    change([['max_active', sale && sale.max_active, next]], { max_active: next });
  });
  $('ctl-notice-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('ctl-notice').value.trim();
    const next = text === '' ? null : text;
    change([['notice', sale && sale.notice, next]], { notice: next });
  });
  $('ctl-pause').addEventListener('click', () => {
    if (!sale) return;
    change([['paused', sale.paused, !sale.paused]], { paused: !sale.paused });
  });
  $('ctl-close').addEventListener('click', () => {
    if (!sale) return;
    change([['closed', false, true]], { closed: true });
  });
  $('sale-edit').addEventListener('click', () => {
    if (sale) openSaleForm(sale);
  });

  $('codes-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.target;
    formError(form, '');
    if (!sale) return;
    const body = { group: form.elements.group.value.trim(), count: fieldValue(form.elements.count.value) };
    const uses = fieldValue(form.elements.uses.value);
    if (uses !== undefined) body.uses = uses;
    try {
      const answer = await call('POST', '/api/admin/sales/' + sale.id + '/codes', body);
      if (answer.status !== 201 || !answer.body) {
        formError(form, errorText(answer.body, answer.status));
        return;
      }
      const out = $('codes-result');
      out.value = answer.body.codes.join('\n');
      out.hidden = false;
      await loadTrail(true);
    } catch (e) {
      if (!e.signedOut) formError(form, 'Cannot reach the api: ' + e.message);
    }
  });

  $('audit-run').addEventListener('click', async () => {
    if (!sale) return;
    const out = $('audit-result');
    out.textContent = 'Running…';
    out.dataset.ok = '';
    try {
      const answer = await call('GET', '/api/admin/sales/' + sale.id + '/audit');
      out.textContent = '';
      if (answer.status !== 200 || !answer.body) {
        out.dataset.ok = 'error';
        out.appendChild(el('p', { class: 'error', text: errorText(answer.body, answer.status) }));
        return;
      }
      const r = answer.body;
      out.dataset.ok = r.ok ? 'true' : 'false';
      out.appendChild(el('p', {
        class: r.ok ? 'ok' : 'breach',
        text: r.ok ? 'OK: no breach' + (r.settled ? ' (settled)' : ' (sale still moving)') : 'Breaches: ' + r.breaches.length
      }));
      const list = el('ul', { class: 'breaches' });
      for (const b of r.breaches || []) list.appendChild(el('li', { class: 'breach', text: b.code + ': ' + b.message }));
      for (const n of r.notes || []) list.appendChild(el('li', { class: 'note', text: n }));
      out.appendChild(list);
    } catch (e) {
      if (!e.signedOut) out.textContent = 'Cannot reach the api: ' + e.message;
    }
  });

  function changeText(event) {
    const before = event.before || {};
    const after = event.after || {};
    if (event.before === null) {
      return Object.entries(after).filter(([, v]) => v !== null && !(Array.isArray(v) && v.length === 0))
        .map(([k, v]) => k + ' = ' + show_(v)).join('; ');
    }
    return Object.keys(after).map((k) => k + ': ' + show_(before[k]) + ' → ' + show_(after[k])).join('; ');
  }

  async function loadTrail(reset) {
    if (!sale) return;
    const body = $('trail-table').tBodies[0];
    if (reset) {
      trailCursor = null;
      trailCount = 0;
    }
    let path = '/api/admin/sales/' + sale.id + '/events?limit=' + TRAIL_PAGE;
    if (!reset && trailCursor) path += '&cursor=' + encodeURIComponent(trailCursor);
    try {
      const answer = await call('GET', path);
      if (answer.status !== 200 || !answer.body) {
        notice('Trail: ' + errorText(answer.body, answer.status));
        return;
      }
      if (reset) body.textContent = '';
      for (const event of answer.body.items) {
        trailCount += 1;
        body.appendChild(el('tr', { 'data-action': event.action, 'data-admin': event.admin_id }, [
          el('td', { class: 'n', text: String(trailCount) }),
          el('td', { text: shortTime(event.at) }),
          el('td', { class: 'mono', text: event.admin_id }),
          el('td', { text: event.action }),
          el('td', { class: 'change', text: changeText(event) })
        ]));
      }
      trailCursor = answer.body.next_cursor;
      $('trail-more').hidden = !trailCursor;
    } catch (e) {
      if (!e.signedOut) notice('Cannot reach the api: ' + e.message);
    }
  }
  $('trail-more').addEventListener('click', () => loadTrail(false));

  // ------------------------------------------------------------------------------------------

  admin.begin();
})();
