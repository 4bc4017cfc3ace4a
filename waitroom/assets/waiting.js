/*
 * Dropline waiting page: sign in, join the line, poll for the place, buy once admitted.
 * No framework and no build step. The server puts the sale id, the api's address and the
 * strings of the page's language in <script id="dl-config" type="application/json">.
 *
 * Contract (DESIGN §9): POST /w/{sale}/join with the access token -> a ticket; GET
 * /w/{sale}/status with the ticket every `retry_after_ms` (plus 0-40 % jitter, 0-10 % below a
 * second, never sooner);
 * DELETE /w/{sale}/join leaves. Once admitted the status carries `pass`: POST {api}/api/orders
 * with the pass (header Dropline-Pass) and an Idempotency-Key, then /pay, then poll the order.
 *
 * Proof of work (door.md §1): a join answered 403 `pow_required` (or `pow_invalid`: expired,
 * spent) fetches GET /w/{sale}/challenge, solves it in a Web Worker (/w/assets/pow.js: WebCrypto
 * with 256 digests in flight, a bundled SHA-256 where crypto.subtle is missing) while a progress
 * bar shows 1 - e^(-hashes / 2^d), then joins again with {challenge, nonce}. The last solve's
 * figures ({difficulty, hashes, ms, method}) are kept in sessionStorage (`dropline.pow.<sale>`).
 *
 * Paying (design/payments.md "Buyer"): with the simulated provider a picker of test tokens
 * (`tok_*`); with Stripe (`payment` in the config: provider, publishable_key, js_url) Stripe.js
 * and its card Element instead, the PaymentMethod's id (`pm_…`) as card_token, and the order's
 * `payment.next_action` handed to Stripe.js (see "The Stripe step" below).
 *
 * Tokens, the ticket, the pass and the order attempt live in sessionStorage (this tab only).
 * document.body carries data-view, data-state and data-outcome for tests and custom styles
 * (with Stripe also data-stripe: loading|ready|failed, and data-payment: the payment's status).
 */
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };

  var config;
  try {
    config = JSON.parse($('dl-config').textContent);
  } catch (e) {
    return; // no settings: the page keeps its static text
  }

  var strings = config.strings || {};
  var has = function (obj, key) { return Object.prototype.hasOwnProperty.call(obj, key); };

  /** The string `key` of the page's language, with `{name}` replaced from `vars`. */
  function t(key, vars) {
    var text = has(strings, key) ? strings[key] : key;
    if (vars) {
      text = text.replace(/\{(\w+)\}/g, function (whole, name) {
        return has(vars, name) ? String(vars[name]) : whole;
      });
    }
    return text;
  }

  var SALE = String(config.sale_id);
  var API = String(config.api_base_url || '').replace(/\/+$/, '');
  var ROOM = '/w/' + encodeURIComponent(SALE);
  var LOCALE = config.lang === 'ko' ? 'ko-KR' : 'en-US';
  var KEYS = {
    auth: 'dropline.auth',
    ticket: 'dropline.ticket.' + SALE,
    first: 'dropline.first.' + SALE,
    opens: 'dropline.opens.' + SALE,
    closes: 'dropline.closes.' + SALE,
    pass: 'dropline.pass.' + SALE,
    order: 'dropline.order.' + SALE,
    pow: 'dropline.pow.' + SALE,
    code: 'dropline.code.' + SALE
  };
  var POW_WORKER = String(config.pow_worker_src || '/w/assets/pow.js');
  /** Challenges fetched in a row without a place (each one solved) before the page gives up. */
  var MAX_POW_TRIES = 3;
  var FINAL_ORDER_STATES = ['paid', 'failed', 'expired', 'cancelled'];
  var MIN_POLL_MS = 250;
  var DEFAULT_POLL_MS = 2000;
  var MAX_BACKOFF_MS = 30000;

  // ------------------------------------------------------------------------------------------
  // Small helpers

  function setText(id, text) {
    var el = $(id);
    if (el) el.textContent = text;
  }

  function setHidden(id, hidden) {
    var el = $(id);
    if (el) el.hidden = hidden;
  }

  function on(id, event, handler) {
    var el = $(id);
    if (el) el.addEventListener(event, handler);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  /**
   * `ms` stretched by 0-40 %: spreads a crowd out and is never sooner than asked. Below a
   * second only by 0-10 %: a buyer told to come back that soon is about to be let in.
   */
  function jitter(ms) {
    return Math.round(ms * (1 + Math.random() * (ms < 1000 ? 0.1 : 0.4)));
  }

  function backoff(failures) {
    return Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, Math.min(failures, 5)));
  }

  /** A v4 UUID; crypto.randomUUID needs a secure context, getRandomValues does not. */
  function newKey() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === 'function') {
      try { return c.randomUUID(); } catch (e) { /* fall through */ }
    }
    var b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }

  var number = new Intl.NumberFormat(LOCALE);

  function money(minor, currency) {
    try {
      var f = new Intl.NumberFormat(LOCALE, { style: 'currency', currency: currency });
      var digits = f.resolvedOptions().maximumFractionDigits;
      return f.format(Number(minor) / Math.pow(10, digits));
    } catch (e) {
      return String(minor) + ' ' + String(currency);
    }
  }

  /** 75 000 ms -> "1:15"; 3 725 000 ms -> "1:02:05". */
  function clock(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var sec = s % 60;
    var two = function (n) { return (n < 10 ? '0' : '') + n; };
    return h > 0 ? h + ':' + two(m) + ':' + two(sec) : m + ':' + two(sec);
  }

  /** Seconds of waiting in words: "about 3 min". */
  function humanEta(seconds) {
    if (seconds === null || seconds === undefined || isNaN(Number(seconds))) return '–';
    var s = Number(seconds);
    if (s <= 5) return t('eta_now');
    if (s < 60) return t('eta_under_minute');
    var minutes = Math.round(s / 60);
    if (minutes < 60) return t('eta_minutes', { n: number.format(minutes) });
    return t('eta_hours', { h: Math.floor(minutes / 60), m: minutes % 60 });
  }

  // ------------------------------------------------------------------------------------------
  // Storage: sessionStorage, or memory where the browser refuses it

  var memory = {};
  var store = {
    get: function (key) {
      var raw = null;
      try { raw = window.sessionStorage.getItem(key); } catch (e) { raw = null; }
      if (raw === null && has(memory, key)) raw = memory[key];
      if (raw === null) return null;
      try { return JSON.parse(raw); } catch (e) { return null; }
    },
    set: function (key, value) {
      var raw = JSON.stringify(value);
      memory[key] = raw;
      try { window.sessionStorage.setItem(key, raw); } catch (e) { /* memory only */ }
    },
    del: function (key) {
      delete memory[key];
      try { window.sessionStorage.removeItem(key); } catch (e) { /* nothing stored */ }
    }
  };

  // ------------------------------------------------------------------------------------------
  // Time: the waitroom's clock, from its Date header, so countdowns do not trust the phone's

  var clockOffset = null;

  function noteServerDate(response) {
    var header = response.headers.get('Date');
    var server = header ? Date.parse(header) : NaN;
    if (isNaN(server)) return;
    // Date has whole seconds: the middle of that second is the best guess.
    var offset = server + 500 - Date.now();
    if (clockOffset === null || Math.abs(offset - clockOffset) > 1000) clockOffset = offset;
  }

  function now() {
    return Date.now() + (clockOffset || 0);
  }

  // ------------------------------------------------------------------------------------------
  // HTTP

  function parseRetryAfter(value) {
    if (!value) return null;
    if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
    var at = Date.parse(value);
    return isNaN(at) ? null : Math.max(0, at - Date.now());
  }

  /**
   * One JSON request. Never throws: a network failure answers status 0. `opts`: token
   * (bearer), body (JSON), headers, sameOrigin (a waitroom call: read its clock).
   */
  function request(method, url, opts) {
    opts = opts || {};
    var headers = { Accept: 'application/json' };
    var extra = opts.headers || {};
    Object.keys(extra).forEach(function (k) { headers[k] = extra[k]; });
    if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'omit' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    return fetch(url, init).then(function (response) {
      if (opts.sameOrigin) noteServerDate(response);
      var type = response.headers.get('Content-Type') || '';
      var parsed = response.status !== 204 && type.indexOf('json') !== -1
        ? response.json().catch(function () { return null; })
        : Promise.resolve(null);
      return parsed.then(function (data) {
        var error = null;
        if (!response.ok) {
          error = data && data.error && data.error.code
            ? data.error
            : { code: 'http_' + response.status, message: response.statusText || '' };
        }
        return {
          status: response.status,
          ok: response.ok,
          data: response.ok ? data : null,
          error: error,
          retryAfter: parseRetryAfter(response.headers.get('Retry-After'))
        };
      });
    }, function (e) {
      return {
        status: 0,
        ok: false,
        data: null,
        error: { code: 'network', message: String((e && e.message) || e) },
        retryAfter: null
      };
    });
  }

  function offline() {
    return { status: 0, ok: false, data: null, error: { code: 'network', message: '' }, retryAfter: null };
  }

  /** Words for a failed call: ours by code in Korean, the server's (the contract's) in English. */
  function errorText(r) {
    if (!r || r.status === 0) return t('err_network');
    var code = r.error && r.error.code;
    var message = r.error && r.error.message;
    var ours = code && has(strings, 'err_' + code) ? t('err_' + code) : null;
    if (config.lang === 'en' && message) return message;
    return ours || message || t('err_generic');
  }

  // ------------------------------------------------------------------------------------------
  // Accounts

  function auth() {
    var a = store.get(KEYS.auth);
    return a && a.access_token ? a : null;
  }

  function keepTokens(data) {
    store.set(KEYS.auth, { access_token: data.access_token, refresh_token: data.refresh_token });
  }

  var refreshing = null;

  /** true: new tokens; false: sign in again; null: could not tell (network), try later. */
  function refreshTokens() {
    if (refreshing) return refreshing;
    var a = auth();
    if (!a || !a.refresh_token) return Promise.resolve(false);
    refreshing = request('POST', API + '/api/auth/refresh', { body: { refresh_token: a.refresh_token } })
      .then(function (r) {
        if (r.ok && r.data && r.data.access_token) {
          keepTokens(r.data);
          return true;
        }
        if (r.status === 0 || r.status === 429 || r.status >= 500) return null;
        store.del(KEYS.auth);
        return false;
      })
      .then(function (result) {
        refreshing = null;
        return result;
      });
    return refreshing;
  }

  /**
   * A call with the access token. On 401 it refreshes the tokens once and repeats the call.
   * Answers null when the buyer has to sign in again (the sign-in form is then shown).
   */
  function authed(method, url, opts) {
    var a = auth();
    if (!a) {
      needSignIn('');
      return Promise.resolve(null);
    }
    var withToken = function (token) {
      var o = {};
      Object.keys(opts || {}).forEach(function (k) { o[k] = opts[k]; });
      o.token = token;
      return o;
    };
    return request(method, url, withToken(a.access_token)).then(function (r) {
      if (r.status !== 401) return r;
      return refreshTokens().then(function (refreshed) {
        if (refreshed === null) return offline();
        if (!refreshed) {
          needSignIn(t('session_expired'));
          return null;
        }
        return request(method, url, withToken(auth().access_token)).then(function (again) {
          if (again.status === 401) {
            store.del(KEYS.auth);
            needSignIn(t('session_expired'));
            return null;
          }
          return again;
        });
      });
    });
  }

  function login(email, password) {
    return request('POST', API + '/api/auth/login', { body: { email: email, password: password } })
      .then(function (r) {
        if (r.ok && r.data && r.data.access_token) keepTokens(r.data);
        return r;
      });
  }

  // ------------------------------------------------------------------------------------------
  // Views

  var VIEWS = ['loading', 'signin', 'signup', 'verify', 'queue', 'left', 'final', 'buy'];
  var currentView = 'loading';

  /** Shows one view; on a change, focus moves to its heading so a screen reader follows. */
  function show(name) {
    VIEWS.forEach(function (v) { setHidden('view-' + v, v !== name); });
    document.body.setAttribute('data-view', name);
    setHidden('signout', !auth());
    if (currentView !== name) {
      var previous = currentView;
      currentView = name;
      if (previous !== 'loading') {
        var heading = document.querySelector('#view-' + name + ' h1');
        if (heading) heading.focus();
      }
    }
  }

  /** The page's own messages (retrying, code sent, signed out). */
  function message(text) {
    setText('message', text || '');
    setHidden('message', !text);
  }

  /**
   * The operator's notice to the line (door.md §4), from a join or status answer: plain text
   * (textContent, never HTML); an answer without it leaves the last one shown.
   */
  function operatorNotice(d) {
    if (!d || !('notice' in d)) return;
    var text = typeof d.notice === 'string' ? d.notice : '';
    setText('notice', text);
    setHidden('notice', !text);
  }

  function fail(text) {
    setText('error', text || '');
    setHidden('error', !text);
  }

  function formError(form, text) {
    setText(form + '-error', text || '');
    setHidden(form + '-error', !text);
  }

  function busy(id, isBusy) {
    var el = $(id);
    if (!el) return;
    el.disabled = isBusy;
    el.setAttribute('aria-busy', isBusy ? 'true' : 'false');
  }

  var lastAnnounced = '';
  var lastAnnounceAt = 0;

  /** Speaks through the polite live region: state changes at once, positions at most every 20 s. */
  function announce(text, urgent) {
    if (text === lastAnnounced) return;
    if (!urgent && Date.now() - lastAnnounceAt < 20000) return;
    lastAnnounced = text;
    lastAnnounceAt = Date.now();
    setText('announcer', text);
  }

  function setState(state) {
    document.body.setAttribute('data-state', state || '');
  }

  function setOutcome(outcome) {
    if (outcome) document.body.setAttribute('data-outcome', outcome);
    else document.body.removeAttribute('data-outcome');
  }

  // ------------------------------------------------------------------------------------------
  // The line. `loop` is bumped whenever the page leaves the line's loop (left, admitted,
  // finished, signed out), so an answer that arrives afterwards changes nothing.

  var loop = 0;
  var timer = null;
  var failures = 0;
  var rejoins = 0;

  function halt() {
    loop += 1;
    clearTimeout(timer);
    timer = null;
    stopPow();
  }

  function later(fn, ms) {
    clearTimeout(timer);
    var mine = loop;
    timer = setTimeout(function () {
      if (mine === loop) fn();
    }, ms);
  }

  function begin() {
    fail('');
    message('');
    if (!auth()) {
      needSignIn('');
      return;
    }
    var pass = store.get(KEYS.pass);
    var attempt = store.get(KEYS.order);
    var passValid = pass && Date.parse(pass.pass_expires_at) > now();
    if (pass && (passValid || (attempt && attempt.order_id && !attempt.done))) {
      enterBuy(pass);
    } else if (store.get(KEYS.ticket)) {
      showQueue();
      poll();
    } else {
      join();
    }
  }

  function needSignIn(message) {
    halt();
    stopPassTimer();
    show('signin');
    formError('signin', message);
  }

  function showQueue() {
    show('queue');
    setHidden('queue-retry', true);
  }

  /**
   * The buyer's access code (door.md §2): from the link (`?code=`), or typed when the sale asked
   * for one; sent with every join until the line is joined.
   */
  function accessCode() {
    var typed = store.get(KEYS.code);
    if (typeof typed === 'string' && typed) return typed;
    try {
      return new URLSearchParams(location.search).get('code') || '';
    } catch (e) {
      return '';
    }
  }

  /** The presale's form: the line's words replaced by the code's, and why when a code failed. */
  function askCode(why) {
    stopPow();
    show('queue');
    setState('code');
    setText('queue-title', t('code_title'));
    setText('queue-body', t('code_body'));
    setHidden('code-form', false);
    formError('code', why);
    var input = $('access-code');
    if (input) {
      if (!input.value) input.value = accessCode();
      input.focus();
    }
  }

  function submitCode(event) {
    event.preventDefault();
    var input = $('access-code');
    var code = input ? String(input.value || '').trim() : '';
    if (!code) return formError('code', t('code_invalid'));
    store.set(KEYS.code, code);
    setHidden('code-form', true);
    join(null);
  }

  /** Joins; `proof` ({challenge, nonce}) when the sale asked for proof of work. */
  function join(proof) {
    var mine = loop;
    showQueue();
    setState('joining');
    var opts = { sameOrigin: true };
    var body = {};
    if (proof && proof.challenge) {
      body.challenge = proof.challenge;
      body.nonce = proof.nonce;
    }
    var code = accessCode();
    if (code) body.access_code = code;
    if (body.challenge || body.access_code) opts.body = body;
    return authed('POST', ROOM + '/join', opts).then(function (r) {
      if (r === null || mine !== loop) return;
      if (r.ok && r.data && r.data.ticket) {
        store.set(KEYS.ticket, r.data.ticket);
        if (r.data.opens_at) store.set(KEYS.opens, r.data.opens_at);
        // A draw's entries close here: leaving is refused after it (design/draw.md).
        if (r.data.entries_close_at) store.set(KEYS.closes, r.data.entries_close_at);
        failures = 0;
        powTries = 0;
        message('');
        fail('');
        setHidden('code-form', true);
        onStatus(r.data);
        return;
      }
      var code = r.error && r.error.code;
      if (r.status === 404) return finish('missing');
      if (code === 'sold_out') return finish('sold_out');
      if (code === 'sale_not_open') return finish('closed');
      if (code === 'pow_required' || code === 'pow_invalid') return work(r);
      if (code === 'access_code_required') return askCode('');
      if (code === 'access_code_invalid' || code === 'access_code_used') {
        store.del(KEYS.code);
        return askCode(t(code === 'access_code_used' ? 'code_used' : 'code_invalid'));
      }
      // queue_full and the like: the same solution is good until its challenge expires.
      retryLater(r, function () { join(proof); });
    });
  }

  // ------------------------------------------------------------------------------------------
  // Proof of work: fetch a challenge, solve it in a worker, join with it

  var powTries = 0;
  var powWorker = null;

  function stopPow() {
    if (powWorker) {
      powWorker.terminate();
      powWorker = null;
    }
    setHidden('pow-box', true);
  }

  /** The solving view: the line's title and words replaced, a progress bar of its own. */
  function showPow(fraction) {
    setText('queue-title', t('pow_title'));
    setText('queue-body', t('pow_body'));
    setHidden('pow-box', false);
    // Tenths on the bar and "<1" in the words: at a high difficulty the first seconds are
    // under 1 %, and a bar stuck at 0 looks like a page that does nothing.
    var tenths = Math.max(0, Math.min(fraction >= 1 ? 1000 : 999, Math.floor(fraction * 1000)));
    var bar = $('pow-progress');
    if (bar) bar.value = tenths / 10;
    var pct = Math.floor(tenths / 10);
    setText('pow-text', t('pow_progress', { p: pct === 0 && fraction > 0 ? '<1' : pct }));
  }

  /** After `pow_required` / `pow_invalid` (r): a new challenge, solved, then join with it. */
  function work(r) {
    powTries += 1;
    if (powTries > MAX_POW_TRIES) {
      powTries = 0;
      stopPow();
      fail(errorText(r));
      setHidden('queue-retry', false);
      setState('error');
      return;
    }
    var mine = loop;
    setState('pow');
    showPow(0);
    announce(t('pow_title'), true);
    return authed('GET', ROOM + '/challenge', { sameOrigin: true }).then(function (c) {
      if (c === null || mine !== loop) return;
      if (!c.ok || !c.data) {
        stopPow();
        if (c.status === 404) return finish('missing');
        powTries -= 1; // not the challenge's fault: try again as told
        return retryLater(c, function () { work(r); });
      }
      if (!c.data.challenge) {
        // The sale stopped asking (difficulty 0).
        stopPow();
        return join();
      }
      return solve(String(c.data.challenge), Number(c.data.difficulty) || 0).then(function (nonce) {
        if (mine !== loop) return;
        stopPow();
        if (nonce === null) {
          fail(t('pow_failed'));
          setHidden('queue-retry', false);
          setState('error');
          return;
        }
        return join({ challenge: c.data.challenge, nonce: nonce });
      });
    });
  }

  /** The nonce that solves `challenge` (null when the worker failed), with progress shown. */
  function solve(challenge, difficulty) {
    return new Promise(function (resolve) {
      stopPow();
      var expected = Math.pow(2, difficulty);
      var worker;
      try {
        worker = new Worker(POW_WORKER);
      } catch (e) {
        resolve(null);
        return;
      }
      powWorker = worker;
      showPow(0);
      worker.onmessage = function (event) {
        var m = event.data || {};
        if (m.type === 'progress') {
          showPow(1 - Math.exp(-Number(m.hashes) / expected));
        } else if (m.type === 'done') {
          showPow(1);
          store.set(KEYS.pow, { difficulty: difficulty, hashes: m.hashes, ms: m.ms, method: m.method });
          resolve(Number(m.nonce));
        } else {
          resolve(null);
        }
      };
      worker.onerror = function () { resolve(null); };
      worker.postMessage({ challenge: challenge, difficulty: difficulty });
    });
  }

  function rejoin() {
    rejoins += 1;
    store.del(KEYS.ticket);
    if (rejoins <= 3) {
      join();
    } else {
      later(join, jitter(backoff(rejoins - 3)));
    }
  }

  function poll() {
    var mine = loop;
    var ticket = store.get(KEYS.ticket);
    if (!ticket) return join();
    return request('GET', ROOM + '/status', { token: ticket, sameOrigin: true }).then(function (r) {
      if (mine !== loop) return;
      if (r.ok && r.data) {
        failures = 0;
        rejoins = 0;
        message('');
        onStatus(r.data);
        return;
      }
      // The place or the ticket is gone (abandoned, expired, reaped): join again.
      if (r.status === 401 || r.status === 404) return rejoin();
      retryLater(r, poll);
    });
  }

  /** After a failed join or poll: wait as the server says, or back off, then `fn` again. */
  function retryLater(r, fn) {
    failures += 1;
    var code = r.error && r.error.code;
    var wait;
    if (r.status === 429 || r.status === 503) {
      wait = jitter(r.retryAfter !== null ? Math.max(r.retryAfter, MIN_POLL_MS) : backoff(failures));
      var key = code === 'queue_full' ? 'retry_queue_full' : code === 'rate_limited' ? 'retry_rate_limited' : 'retry_busy';
      message(t(key, { s: Math.ceil(wait / 1000) }));
    } else if (r.status === 0 || r.status >= 500) {
      wait = jitter(backoff(failures));
      message(t('retry_network', { s: Math.ceil(wait / 1000) }));
    } else {
      // A refusal that asking again will not change: say so and let the buyer retry.
      fail(errorText(r));
      setHidden('queue-retry', false);
      setState('error');
      return;
    }
    later(fn, wait);
  }

  function onStatus(d) {
    operatorNotice(d);
    var state = String(d.state || '');
    setState(state);
    // A draw's winner (design/draw.md) buys as an admitted buyer does, until the claim deadline.
    if ((state === 'admitted' || state === 'won') && d.pass) {
      // A win caps the quantity at its max_quantity (what is left of the stock may be less
      // than per_user_limit); reserve.lua refuses more with limit_exceeded anyway.
      var cap = Number(d.max_quantity);
      enterBuy({ pass: d.pass, pass_expires_at: d.pass_expires_at, max_quantity: cap >= 1 ? cap : null });
      return;
    }
    if (state === 'sold_out') return finish('sold_out');
    if (state === 'closed') return finish('closed');
    if (state === 'not_won' || state === 'forfeited' || state === 'claimed') return finish(state);
    renderQueue(d);
    later(poll, jitter(Math.max(MIN_POLL_MS, Number(d.retry_after_ms) || DEFAULT_POLL_MS)));
  }

  var renderedState = '';

  function renderQueue(d) {
    var scheduled = d.state === 'scheduled';
    // A new state is spoken at once; a new position at most every 20 s.
    var newState = d.state !== renderedState;
    renderedState = d.state;
    var paused = d.state === 'paused';
    // A draw's entrant: entered (before the draw) or on the waiting list (design/draw.md).
    var draw = d.state === 'entered' || d.state === 'waitlisted';
    var words = scheduled ? 'scheduled' : paused ? 'paused' : draw ? d.state : 'waiting';
    // The priority group (door.md §2), shown when it is one of the sale's own.
    var group = typeof d.group === 'string' ? d.group : '';
    setText('group', group);
    setHidden('group-row', !group || group === 'public');
    setText('queue-title', t(words + '_title'));
    setText('queue-body', t(words + '_body'));

    var position = typeof d.position === 'number' ? d.position : null;
    var progress = $('progress');
    if (position !== null) {
      var first = store.get(KEYS.first);
      if (typeof first !== 'number' || position > first) {
        first = position;
        store.set(KEYS.first, first);
      }
      setText('position', number.format(position));
      setText('ahead', position > 1 ? t('people_ahead', { n: number.format(position - 1) }) : t('next_in_line'));
      var pct = first > 0 ? Math.round(((first - position) / first) * 100) : 0;
      pct = Math.max(0, Math.min(99, pct));
      if (progress) progress.value = pct;
      setText('progress-text', t('progress_value', { p: pct }));
      announce(t('announce_position', { n: number.format(position), eta: humanEta(d.eta_seconds) }), newState);
    } else {
      setText('position', '–');
      setText('ahead', '');
      if (progress) progress.removeAttribute('value'); // indeterminate until the line forms
      setText('progress-text', '');
      announce(t(words + '_title'), newState);
    }
    setText('eta', scheduled || draw ? '–' : humanEta(d.eta_seconds));
    // A draw's entry cannot be withdrawn once the entries are frozen: no button that only fails.
    var closes = Date.parse(store.get(KEYS.closes) || '');
    setHidden('leave', d.state === 'waitlisted' || (draw && !isNaN(closes) && now() >= closes));
    setText('updated', t('updated_at', { time: new Date().toLocaleTimeString(LOCALE) }));
    tickCountdown();
  }

  setInterval(tickCountdown, 1000);

  function tickCountdown() {
    var box = $('countdown-box');
    if (!box) return;
    var opens = Date.parse(store.get(KEYS.opens) || '');
    var scheduled = document.body.getAttribute('data-state') === 'scheduled';
    if (!scheduled || isNaN(opens) || currentView !== 'queue') {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    var left = opens - now();
    setText('countdown', left > 0 ? clock(left) : t('opening_now'));
  }

  function finish(kind) {
    halt();
    stopPassTimer();
    store.del(KEYS.ticket);
    store.del(KEYS.first);
    store.del(KEYS.pass);
    setState(kind);
    setText('final-title', t(kind + '_title'));
    setText('final-body', t(kind + '_body'));
    message('');
    show('final');
    announce(t(kind + '_title'), true);
  }

  function leave() {
    var ticket = store.get(KEYS.ticket);
    halt();
    busy('leave', true);
    var done = ticket
      ? request('DELETE', ROOM + '/join', { token: ticket, sameOrigin: true })
      : Promise.resolve({ status: 204, ok: true });
    return done.then(function (r) {
      busy('leave', false);
      // 401/404: the place was already gone, which is what the buyer asked for.
      if (r.ok || r.status === 401 || r.status === 404) {
        store.del(KEYS.ticket);
        store.del(KEYS.first);
        setState('left');
        message('');
        fail('');
        show('left');
        announce(t('left_title'), true);
        return;
      }
      // Could not leave: keep the place alive and say so.
      fail(errorText(r));
      later(poll, jitter(DEFAULT_POLL_MS));
    });
  }

  // ------------------------------------------------------------------------------------------
  // Admitted: the purchase view

  var passTimer = null;
  var saleInfo = null;

  function stopPassTimer() {
    clearInterval(passTimer);
    passTimer = null;
  }

  function enterBuy(pass) {
    halt();
    store.set(KEYS.pass, pass);
    setState('admitted');
    message('');
    fail('');
    show('buy');
    announce(t('admitted_announce'), true);
    stopPassTimer();
    tickPass();
    passTimer = setInterval(tickPass, 1000);
    loadSale();
    var attempt = store.get(KEYS.order);
    if (attempt && attempt.order_id && !attempt.done) {
      resumeOrder(attempt);
    } else if (attempt && attempt.done && attempt.order) {
      // Back on the page after the outcome: show it again.
      renderOrder(attempt.order);
      orderDone(attempt.status, attempt);
    }
  }

  function orderActive() {
    var attempt = store.get(KEYS.order);
    return Boolean(attempt && attempt.order_id && !attempt.done);
  }

  function tickPass() {
    var pass = store.get(KEYS.pass);
    var left = pass ? Date.parse(pass.pass_expires_at) - now() : 0;
    if (isNaN(left)) left = 0;
    setText('pass-left', clock(left));
    var hold = store.get(KEYS.order);
    if (hold && hold.hold_expires_at && hold.status === 'held' && !hold.done) {
      var holdLeft = Date.parse(hold.hold_expires_at) - now();
      setText('hold-left', isNaN(holdLeft) ? '' : t('hold_left', { time: clock(holdLeft) }));
    } else {
      setText('hold-left', '');
    }
    if (left <= 0 && !orderActive()) {
      stopPassTimer();
      busy('order-submit', true);
      setText('order-result', t('pass_expired'));
      setHidden('buy-rejoin', false);
      setOutcome('pass_expired');
    }
  }

  function loadSale() {
    return request('GET', API + '/api/sales/' + encodeURIComponent(SALE)).then(function (r) {
      var limit = 1;
      if (r.ok && r.data) {
        saleInfo = r.data;
        limit = Math.max(1, Math.min(20, Number(r.data.per_user_limit) || 1));
        var held = store.get(KEYS.pass);
        if (held && Number(held.max_quantity) >= 1) limit = Math.min(limit, Number(held.max_quantity));
        var product = r.data.product;
        if (product && product.name) {
          setText('product-name', product.name);
          setText('product-price', money(product.price, product.currency || 'KRW'));
          setHidden('product', false);
        }
      }
      var select = $('quantity');
      if (!select) return;
      var chosen = Number(select.value) || 1;
      while (select.firstChild) select.removeChild(select.firstChild);
      for (var i = 1; i <= limit; i += 1) {
        var option = document.createElement('option');
        option.value = String(i);
        option.textContent = number.format(i);
        if (i === Math.min(chosen, limit)) option.selected = true;
        select.appendChild(option);
      }
    });
  }

  /** Repeats `call` through brief trouble (network, 429, 5xx), at most 4 times. */
  function withRetry(call) {
    var tries = 0;
    var attempt = function () {
      return call().then(function (r) {
        tries += 1;
        var transient = r && (r.status === 0 || r.status === 429 || r.status >= 500);
        if (!transient || tries >= 4) return r;
        var wait = jitter(r.retryAfter !== null ? Math.min(r.retryAfter, 10000) : 1000 * tries);
        message(t('retry_network', { s: Math.ceil(wait / 1000) }));
        return sleep(wait).then(attempt);
      });
    };
    return attempt().then(function (r) {
      message('');
      return r;
    });
  }

  function orderUrl(id, suffix) {
    return API + '/api/orders/' + encodeURIComponent(id) + (suffix || '');
  }

  function buy() {
    var mine = loop;
    if (!PAYMENT) return placeOrder(mine, ($('card') || {}).value || 'tok_test');
    // Stripe: the card first (no order is placed for a card Stripe refuses to read).
    busy('order-submit', true);
    setOutcome('');
    fail('');
    setText('order-result', t('stripe_loading'));
    return stripeToken().then(function (r) {
      if (mine !== loop) return;
      if (r.error) {
        setOutcome('error');
        setText('order-result', r.error);
        busy('order-submit', false);
        return;
      }
      return placeOrder(mine, r.token);
    });
  }

  /** Orders (once per attempt) and pays with `card`: a `tok_*` test token or a `pm_…` id. */
  function placeOrder(mine, card) {
    var quantity = Number(($('quantity') || {}).value) || 1;
    var attempt = store.get(KEYS.order);
    // One Idempotency-Key per attempt: a retry of the same attempt reuses it, a new
    // quantity or a finished attempt starts a new one.
    if (!attempt || attempt.done || (!attempt.order_id && attempt.quantity !== quantity)) {
      attempt = { key: newKey(), quantity: quantity };
    }
    attempt.card = card;
    store.set(KEYS.order, attempt);
    busy('order-submit', true);
    setText('order-result', t('ordering'));
    setOutcome('');
    fail('');
    var created = attempt.order_id
      ? Promise.resolve(true)
      : withRetry(function () {
        var pass = store.get(KEYS.pass) || {};
        return authed('POST', API + '/api/orders', {
          body: { sale_id: SALE, quantity: attempt.quantity },
          headers: { 'Dropline-Pass': pass.pass || '', 'Idempotency-Key': attempt.key }
        });
      }).then(function (r) {
        if (r === null || mine !== loop) return false;
        if (r.status === 404) return unavailable();
        if (!r.ok || !r.data || !r.data.id) return orderRefused(r, attempt);
        attempt.order_id = r.data.id;
        keepOrder(attempt, r.data);
        renderOrder(r.data);
        return true;
      });
    return created.then(function (ok) {
      if (ok) return pay(attempt, mine);
    });
  }

  function pay(attempt, mine) {
    setText('order-result', t('paying'));
    return withRetry(function () {
      return authed('POST', orderUrl(attempt.order_id, '/pay'), { body: { card_token: attempt.card || 'tok_test' } });
    }).then(function (r) {
      if (r === null || mine !== loop) return;
      if (r.status === 404) return unavailable();
      // invalid_state: the order is no longer held (paying already, paid, expired): look.
      var settled = r.ok || (r.error && r.error.code === 'invalid_state');
      if (!settled) return orderRefused(r, attempt);
      attempt.paying = true;
      store.set(KEYS.order, attempt);
      return watchOrder(attempt, mine);
    });
  }

  function watchOrder(attempt, mine) {
    var delay = 1000;
    var step = function () {
      return authed('GET', orderUrl(attempt.order_id)).then(function (r) {
        if (r === null || mine !== loop) return;
        if (r.status === 404) return unavailable();
        if (r.ok && r.data) {
          keepOrder(attempt, r.data);
          renderOrder(r.data);
          var status = String(r.data.status || '').toLowerCase();
          if (FINAL_ORDER_STATES.indexOf(status) !== -1) return orderDone(status, attempt);
          var payment = r.data.payment;
          if (PAYMENT && payment && payment.status === 'requires_action' && payment.next_action) {
            // The buyer's step (3-D Secure), then on polling: the worker learns the outcome
            // from Stripe's webhook, or at the payment deadline.
            return nextAction(attempt, payment.next_action).then(function () {
              return sleep(jitter(delay)).then(function () {
                if (mine === loop) return step();
              });
            });
          }
        }
        var wait = jitter(r.retryAfter !== null ? Math.max(r.retryAfter, delay) : delay);
        delay = Math.min(5000, Math.round(delay * 1.5));
        return sleep(wait).then(function () {
          if (mine === loop) return step();
        });
      });
    };
    return step();
  }

  /** After a reload with an order in hand: look at it, then carry on from where it is. */
  function resumeOrder(attempt) {
    var mine = loop;
    busy('order-submit', true);
    return authed('GET', orderUrl(attempt.order_id)).then(function (r) {
      if (r === null || mine !== loop) return;
      if (r.status === 404) return unavailable();
      if (!r.ok || !r.data) {
        busy('order-submit', false);
        return;
      }
      keepOrder(attempt, r.data);
      renderOrder(r.data);
      var status = String(r.data.status || '').toLowerCase();
      if (FINAL_ORDER_STATES.indexOf(status) !== -1) return orderDone(status, attempt);
      if (status === 'paying') return watchOrder(attempt, mine);
      setText('order-submit', t('pay_submit'));
      busy('order-submit', false);
    });
  }

  function keepOrder(attempt, order) {
    attempt.status = String(order.status || '').toLowerCase();
    if (order.hold_expires_at) attempt.hold_expires_at = order.hold_expires_at;
    // Kept without the payment's next step: a client secret is not stored.
    var kept = {};
    Object.keys(order).forEach(function (k) { kept[k] = order[k]; });
    if (kept.payment && kept.payment.next_action) {
      kept.payment = { provider: kept.payment.provider, status: kept.payment.status, reason: kept.payment.reason };
    }
    attempt.order = kept;
    store.set(KEYS.order, attempt);
  }

  function renderOrder(order) {
    var status = String(order.status || '').toLowerCase();
    setHidden('order-box', false);
    setText('order-status', has(strings, 'order_' + status) ? t('order_' + status) : status);
    if (order.amount !== undefined && order.currency) {
      setText('order-amount', t('order_amount', { amount: money(order.amount, order.currency), n: number.format(order.quantity || 1) }));
    }
    renderPayment(order.payment);
    tickPass();
  }

  function orderDone(status, attempt) {
    attempt.done = true;
    store.set(KEYS.order, attempt);
    setOutcome(status);
    var payment = attempt.order && attempt.order.payment;
    var result = PAYMENT && payment && payment.status === 'refunded' ? 'result_refunded' : 'result_' + status;
    setText('order-result', t(result));
    announce(t(result), true);
    setText('order-submit', t('order_submit'));
    if (status === 'paid') {
      setHidden('order-form', true);
      busy('order-submit', true);
    } else {
      busy('order-submit', false);
      tickPass();
    }
  }

  function unavailable() {
    setOutcome('unavailable');
    setText('order-result', t('orders_unavailable'));
    busy('order-submit', false);
    return false;
  }

  function orderRefused(r, attempt) {
    var code = r.error && r.error.code;
    setOutcome('error');
    setText('order-result', errorText(r));
    busy('order-submit', false);
    if (code === 'idempotency_key_reused' || code === 'sold_out' || code === 'limit_exceeded') {
      attempt.done = true;
      store.set(KEYS.order, attempt);
    }
    if (code === 'not_admitted') {
      busy('order-submit', true);
      setHidden('buy-rejoin', false);
    }
    return false;
  }

  function rejoinFromBuy() {
    stopPassTimer();
    store.del(KEYS.pass);
    store.del(KEYS.order);
    store.del(KEYS.ticket);
    store.del(KEYS.first);
    setHidden('buy-rejoin', true);
    setHidden('order-box', true);
    setHidden('order-form', false);
    setText('order-result', '');
    setOutcome('');
    busy('order-submit', false);
    halt();
    join();
  }

  // ------------------------------------------------------------------------------------------
  // The Stripe step (payment.provider = stripe; design/payments.md "Buyer")
  //
  // Stripe.js is loaded from `payment.js_url` (checked by the waitroom at start; the
  // Content-Security-Policy lets only its origins in), a card Element is mounted in #stripe-card
  // in place of the simulated picker (#card, its label and #card-hint, which says payments are
  // simulated, are hidden), and a pay sends the PaymentMethod's id as card_token. While the
  // order pays, GET /api/orders/{id} may answer payment.next_action: `stripe_js` goes to
  // stripe.handleNextAction({clientSecret}), or stripe.confirmCardPayment(clientSecret) where
  // Stripe.js lacks it (localstripe's mock), once per client secret and page; `redirect` sends
  // the tab to its URL (https only; http to a loopback host for local tests), once per order.
  //
  // Test hook: localstripe's mock of Stripe.js cannot make PaymentMethods, so with a test-mode
  // key (`pk_test_…`) only, a PaymentMethod id (`pm_…`) in this tab's sessionStorage under
  // `dropline.test.payment_method` is sent instead of the card Element's. It holds no card data,
  // only script on this page can set it, the id must still be one of the shop's PaymentMethods
  // at Stripe, and with a live key (`pk_live_…`) it is never read.

  var PAYMENT = config.payment && config.payment.provider === 'stripe' ? config.payment : null;
  var TEST_PAYMENT_METHOD = 'dropline.test.payment_method';
  var PAYMENT_METHOD = /^pm_[A-Za-z0-9_]{1,125}$/;
  var stripeReady = null;
  var handledSecrets = {};

  /** Stripe.js with its card Element mounted: a promise of {stripe, card}, or of null. */
  function loadStripe() {
    if (stripeReady) return stripeReady;
    stripeReady = new Promise(function (resolve) {
      var url = null;
      try { url = new URL(String(PAYMENT.js_url)); } catch (e) { url = null; }
      if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) return resolve(null);
      if (typeof window.Stripe === 'function') return resolve(window.Stripe);
      var script = document.createElement('script');
      script.src = url.href;
      script.async = true;
      script.onload = function () { resolve(typeof window.Stripe === 'function' ? window.Stripe : null); };
      script.onerror = function () { resolve(null); };
      document.head.appendChild(script);
    }).then(function (Stripe) {
      if (!Stripe) return null;
      try {
        var stripe = Stripe(String(PAYMENT.publishable_key));
        var elements = stripe.elements({ locale: config.lang === 'ko' ? 'ko' : 'en' });
        var card = elements.create('card', { hidePostalCode: true });
        card.mount(stripeMount());
        return { stripe: stripe, card: card };
      } catch (e) {
        return null;
      }
    }).then(function (s) {
      document.body.setAttribute('data-stripe', s ? 'ready' : 'failed');
      return s;
    });
    return stripeReady;
  }

  /** Where the card Element goes: #stripe-card, made after #card if a template lacks it. */
  function stripeMount() {
    var el = $('stripe-card');
    if (el) return el;
    el = document.createElement('div');
    el.id = 'stripe-card';
    el.className = 'stripe-card';
    var after = $('card') || $('quantity');
    if (after && after.parentNode) after.parentNode.insertBefore(el, after.nextSibling);
    else document.body.appendChild(el);
    return el;
  }

  /** The simulated picker out, the Stripe step in, Stripe.js on its way. */
  function setupStripe() {
    if (!PAYMENT) return;
    setHidden('card', true);
    setHidden('card-hint', true);
    var label = document.querySelector('label[for="card"]');
    if (label) label.hidden = true;
    setHidden('stripe-box', false);
    document.body.setAttribute('data-stripe', 'loading');
    loadStripe();
  }

  /** The test hook's PaymentMethod id (test-mode key only), or null. */
  function testPaymentMethod() {
    if (!/^pk_test_/.test(String(PAYMENT.publishable_key))) return null;
    var id = null;
    try { id = window.sessionStorage.getItem(TEST_PAYMENT_METHOD); } catch (e) { id = null; }
    return id && PAYMENT_METHOD.test(id) ? id : null;
  }

  /** The card_token for a pay: a promise of {token} or {error} (words for the buyer). */
  function stripeToken() {
    return loadStripe().then(function (s) {
      if (!s) return { error: t('stripe_unavailable') };
      var hook = testPaymentMethod();
      if (hook) return { token: hook };
      var failed = function (reason) {
        return { error: t('stripe_card_error', { reason: reason || t('err_generic') }) };
      };
      return Promise.resolve(s.stripe.createPaymentMethod({ type: 'card', card: s.card })).then(function (result) {
        var id = result && result.paymentMethod && result.paymentMethod.id;
        if (id && PAYMENT_METHOD.test(id)) return { token: id };
        return failed(result && result.error && result.error.message);
      }, function (e) {
        return failed(e && e.message);
      });
    });
  }

  /** A redirect next_action's URL when it is safe to follow: https, or http to loopback. */
  function safeRedirect(raw) {
    var url = null;
    try { url = new URL(String(raw)); } catch (e) { return null; }
    if (url.protocol === 'https:') return url.href;
    var loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\./.test(url.hostname);
    return url.protocol === 'http:' && loopback ? url.href : null;
  }

  /** The buyer's step of a payment that requires action; a promise settled when it is done. */
  function nextAction(attempt, action) {
    if (action.type === 'redirect') {
      var url = safeRedirect(action.url);
      if (!url || attempt.redirected === url) return Promise.resolve();
      attempt.redirected = url;
      store.set(KEYS.order, attempt);
      message(t('payment_redirect'));
      window.location.assign(url);
      return Promise.resolve();
    }
    var secret = action.type === 'stripe_js' ? action.client_secret : null;
    if (typeof secret !== 'string' || !secret || has(handledSecrets, secret)) return Promise.resolve();
    handledSecrets[secret] = true;
    message(t('payment_authenticate'));
    announce(t('payment_authenticate'), true);
    return loadStripe().then(function (s) {
      if (!s) {
        message('');
        setText('order-result', t('stripe_unavailable'));
        return null;
      }
      var call = typeof s.stripe.handleNextAction === 'function'
        ? s.stripe.handleNextAction({ clientSecret: secret })
        : s.stripe.confirmCardPayment(secret);
      return Promise.resolve(call).then(function (result) {
        message('');
        if (result && result.error && result.error.message) {
          setText('order-result', t('stripe_card_error', { reason: result.error.message }));
        }
      }, function () {
        message('');
      });
    });
  }

  /** With Stripe: the payment's status under the order's (data-payment for tests and styles). */
  function renderPayment(payment) {
    if (!PAYMENT) return;
    if (!payment || !payment.status) {
      setHidden('payment-line', true);
      document.body.removeAttribute('data-payment');
      return;
    }
    var status = String(payment.status);
    var text = status === 'declined' && payment.reason
      ? t('payment_declined_reason', { reason: String(payment.reason) })
      : (has(strings, 'payment_' + status) ? t('payment_' + status) : status);
    setText('payment-status', text);
    setHidden('payment-line', false);
    document.body.setAttribute('data-payment', status);
  }

  // ------------------------------------------------------------------------------------------
  // Sign-in, sign-up and e-mail verification

  var pending = null; // {email, password} between sign-up and verification, memory only

  function field(id) {
    var el = $(id);
    return el ? el.value : '';
  }

  function signIn(ev) {
    ev.preventDefault();
    var email = field('signin-email').trim();
    var password = field('signin-password');
    if (!email || !password) return formError('signin', t('err_fill_in'));
    formError('signin', '');
    busy('signin-submit', true);
    return login(email, password).then(function (r) {
      busy('signin-submit', false);
      if (r.ok && auth()) {
        var pw = $('signin-password');
        if (pw) pw.value = '';
        begin();
        return;
      }
      if (r.error && r.error.code === 'email_not_verified') {
        pending = { email: email, password: password };
        showVerify(email);
        return;
      }
      formError('signin', errorText(r));
    });
  }

  function signUp(ev) {
    ev.preventDefault();
    var name = field('signup-name').trim();
    var email = field('signup-email').trim();
    var password = field('signup-password');
    if (!name || !email || !password) return formError('signup', t('err_fill_in'));
    formError('signup', '');
    busy('signup-submit', true);
    return request('POST', API + '/api/users', { body: { email: email, password: password, name: name } })
      .then(function (r) {
        busy('signup-submit', false);
        if (r.ok) {
          pending = { email: email, password: password };
          showVerify(email);
          return;
        }
        formError('signup', errorText(r));
      });
  }

  function showVerify(email) {
    setText('verify-intro', t('verify_intro', { email: email }));
    formError('verify', '');
    show('verify');
  }

  function verify(ev) {
    ev.preventDefault();
    var code = field('verify-code').trim();
    if (!pending) return show('signin');
    if (!/^\d{6}$/.test(code)) return formError('verify', t('err_code_format'));
    formError('verify', '');
    busy('verify-submit', true);
    return request('POST', API + '/api/users/verify', { body: { email: pending.email, code: code } })
      .then(function (r) {
        if (!r.ok) {
          busy('verify-submit', false);
          formError('verify', errorText(r));
          return null;
        }
        return login(pending.email, pending.password).then(function (lr) {
          busy('verify-submit', false);
          if (lr.ok && auth()) {
            pending = null;
            begin();
            return;
          }
          var signinEmail = $('signin-email');
          if (signinEmail) signinEmail.value = pending.email;
          show('signin');
          formError('signin', errorText(lr));
        });
      });
  }

  function resend() {
    if (!pending) return;
    busy('resend', true);
    return request('POST', API + '/api/users/verify/resend', { body: { email: pending.email } })
      .then(function (r) {
        busy('resend', false);
        if (r.ok) formError('verify', '');
        if (r.ok) message(t('code_resent'));
        else formError('verify', errorText(r));
      });
  }

  function signOut() {
    var a = auth();
    halt();
    stopPassTimer();
    Object.keys(KEYS).forEach(function (k) { store.del(KEYS[k]); });
    setState('');
    setOutcome('');
    // The purchase view as new, for whoever signs in next in this tab.
    setHidden('buy-rejoin', true);
    setHidden('order-box', true);
    setHidden('order-form', false);
    setText('order-result', '');
    setText('order-submit', t('order_submit'));
    busy('order-submit', false);
    renderPayment(null);
    if (stripeReady) {
      stripeReady.then(function (s) {
        if (s && typeof s.card.clear === 'function') s.card.clear();
      });
    }
    if (a && a.refresh_token) {
      request('POST', API + '/api/auth/logout', { body: { refresh_token: a.refresh_token } });
    }
    message(t('signed_out'));
    needSignIn('');
  }

  // ------------------------------------------------------------------------------------------

  on('signin-form', 'submit', signIn);
  on('code-form', 'submit', submitCode);
  on('signup-form', 'submit', signUp);
  on('verify-form', 'submit', verify);
  on('resend', 'click', resend);
  on('to-signup', 'click', function () { message(''); formError('signup', ''); show('signup'); });
  on('to-signin', 'click', function () { message(''); show('signin'); });
  on('verify-to-signin', 'click', function () { message(''); show('signin'); });
  on('signout', 'click', signOut);
  on('leave', 'click', leave);
  on('rejoin', 'click', function () { rejoins = 0; fail(''); join(); });
  on('queue-retry', 'click', function () { fail(''); failures = 0; setHidden('queue-retry', true); join(); });
  on('order-form', 'submit', function (ev) { ev.preventDefault(); buy(); });
  on('buy-rejoin', 'click', rejoinFromBuy);

  setupStripe();
  begin();
}());
