/*
 * Dropline administrators' sign-in, shared by the console (/w/admin), the control room
 * (/w/{sale}/control) and the sale report (/w/{sale}/report). No framework, no build step.
 *
 * One place for the tokens, the sign-in form (POST {api}/api/auth/login), the pasted-token form
 * (where the page has one), one refresh on a 401 (POST {api}/api/auth/refresh), and signing
 * out on a 401 that the refresh did not mend or on a 403 (not an administrator).
 *
 * The tokens live in sessionStorage under one key for the three pages: this tab only, and the
 * tabs this one opens with an opener (the console's report and control-room links), which the
 * browser starts with a copy. A token is never kept past the browser session.
 *
 * A page calls DroplineAdmin.session({ api, view, also, onStart, onSignOut }):
 *   api          the api's base URL (the page's config)
 *   view         the page's own view: body[data-view] when signed in, shown in #view-<view>
 *                (#view-signin otherwise)
 *   also         ids shown only when signed in besides #signout (the console's tabs)
 *   onStart()    signed in: at begin() when a token is kept, and after each sign-in
 *   onSignOut()  signed out: the page stops its timers (its generation counter)
 * and gets { begin, show, call, signOut, signedIn }. show(signedIn) shows the page's view or
 * the sign-in. call(method, url, body, { keep403 }) sends JSON
 * (body undefined: none) with the access token and answers { status, body }; when it signs out
 * it throws an Error whose `signedOut` is true, so a caller's catch can tell it from a network
 * error. DroplineAdmin.errorText(body, status) is the API's error message (DESIGN §9's
 * error.message), or the HTTP status.
 */
(function () {
  'use strict';

  const AUTH_KEY = 'dropline.admin.auth';
  const $ = (id) => document.getElementById(id);

  function errorText(body, status) {
    if (body && body.error && body.error.message) return body.error.message;
    return 'HTTP ' + status;
  }

  function load() {
    try {
      const auth = JSON.parse(sessionStorage.getItem(AUTH_KEY));
      return auth && typeof auth.access_token === 'string' && auth.access_token ? auth : null;
    } catch (e) {
      return null;
    }
  }

  function store(auth) {
    try {
      if (auth) sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth));
      else sessionStorage.removeItem(AUTH_KEY);
    } catch (e) { /* storage refused: the token lives until the page closes */ }
  }

  async function send(url, method, body, token) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = 'Bearer ' + token;
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store'
    });
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    return { status: response.status, body: json };
  }

  function signedOutError() {
    const error = new Error('signed out');
    error.signedOut = true;
    return error;
  }

  function session(options) {
    const api = String(options.api || '').replace(/\/+$/, '');
    let current = load();

    function save(auth) {
      store(auth);
      current = auth;
    }

    function show(signedIn) {
      document.body.dataset.view = signedIn ? options.view : 'signin';
      $('view-signin').hidden = signedIn;
      $('view-' + options.view).hidden = !signedIn;
      for (const id of ['signout'].concat(options.also || [])) {
        const node = $(id);
        if (node) node.hidden = !signedIn;
      }
    }

    function signOut(message) {
      save(null);
      options.onSignOut();
      show(false);
      const out = $('signin-error');
      if (out) out.textContent = message || '';
    }

    /** A new access token from the refresh token; false when there is none or it was refused. */
    async function refresh() {
      if (!current || !current.refresh_token) return false;
      try {
        const answer = await send(api + '/api/auth/refresh', 'POST', { refresh_token: current.refresh_token });
        if (answer.status !== 200 || !answer.body || !answer.body.access_token) return false;
        save({ access_token: answer.body.access_token, refresh_token: answer.body.refresh_token });
        return true;
      } catch (e) {
        return false;
      }
    }

    async function call(method, url, body, opts) {
      if (!current) throw signedOutError();
      let answer = await send(url, method, body, current.access_token);
      if (answer.status === 401 && (await refresh())) {
        answer = await send(url, method, body, current.access_token);
      }
      if (answer.status === 401) {
        signOut('Please sign in again (' + errorText(answer.body, 401) + ').');
        throw signedOutError();
      }
      if (answer.status === 403 && !(opts && opts.keep403)) {
        signOut('This account is not an administrator: ' + errorText(answer.body, 403));
        throw signedOutError();
      }
      return answer;
    }

    function started(auth) {
      save(auth);
      const out = $('signin-error');
      if (out) out.textContent = '';
      options.onStart();
    }

    $('signin-form').addEventListener('submit', async (event) => {
      event.preventDefault();
      const out = $('signin-error');
      out.textContent = '';
      const button = $('signin-submit');
      button.disabled = true;
      try {
        const answer = await send(api + '/api/auth/login', 'POST', {
          email: $('signin-email').value.trim(),
          password: $('signin-password').value
        });
        if (answer.status !== 200 || !answer.body || !answer.body.access_token) {
          out.textContent = errorText(answer.body, answer.status);
          return;
        }
        $('signin-password').value = '';
        started({ access_token: answer.body.access_token, refresh_token: answer.body.refresh_token });
      } catch (e) {
        out.textContent = 'Cannot reach the api: ' + e.message;
      } finally {
        button.disabled = false;
      }
    });

    const tokenForm = $('token-form');
    if (tokenForm) {
      tokenForm.addEventListener('submit', (event) => {
        event.preventDefault();
        const token = $('token-input').value.trim();
        if (!token) return;
        $('token-input').value = '';
        started({ access_token: token, refresh_token: null });
      });
    }

    $('signout').addEventListener('click', () => signOut(''));

    return {
      /** Starts the page: its own view when a token is kept, else the sign-in form. */
      begin() {
        if (current) options.onStart(); else show(false);
      },
      show,
      call,
      signOut,
      signedIn: () => current !== null
    };
  }

  window.DroplineAdmin = { session, errorText };
})();
