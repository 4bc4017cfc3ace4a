/*
 * Dropline proof of work (door.md §1), run by waiting.js as a Web Worker so the page stays
 * responsive while it works. No framework, no build step.
 *
 * Finds the smallest nonce n (from `start`, default 0) such that
 *   SHA-256(ASCII(challenge) || n as 8 bytes big endian)
 * starts with `difficulty` zero bits (byte 0, bit 7 first). About 2^difficulty hashes.
 *
 * With WebCrypto (crypto.subtle, secure contexts: https and localhost) it keeps 256 digests in
 * flight and checks them as a batch: one digest at a time pays a promise round trip per hash.
 * Where crypto.subtle is missing (a page served over plain http) it uses the small SHA-256
 * below, which hashes the challenge's whole 64-byte blocks once and only the last block(s) per
 * nonce.
 *
 * In:  {challenge: string, difficulty: 0..32, start?: integer, fallback?: true (skip WebCrypto)}
 * Out: {type: 'progress', hashes}                          after the first batch, then every 100 ms
 *      {type: 'done', nonce, hashes, ms, method: 'webcrypto' | 'js'}
 *      {type: 'error', message}
 */
(function () {
  'use strict';

  var BATCH = 256;
  var PROGRESS_MS = 100;
  var TWO_32 = 4294967296;
  var MAX_NONCE = 9007199254740991; // 2^53 - 1: what a JSON number holds exactly

  function ascii(text) {
    var out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
    return out;
  }

  /** Writes n (0 <= n <= 2^53 - 1) as 8 bytes big endian at `offset`. */
  function putNonce(bytes, offset, n) {
    var hi = Math.floor(n / TWO_32);
    var lo = n - hi * TWO_32;
    bytes[offset] = hi >>> 24;
    bytes[offset + 1] = (hi >>> 16) & 0xff;
    bytes[offset + 2] = (hi >>> 8) & 0xff;
    bytes[offset + 3] = hi & 0xff;
    bytes[offset + 4] = lo >>> 24;
    bytes[offset + 5] = (lo >>> 16) & 0xff;
    bytes[offset + 6] = (lo >>> 8) & 0xff;
    bytes[offset + 7] = lo & 0xff;
  }

  /** Whether `digest` (bytes) starts with `bits` zero bits. */
  function zeroBits(digest, bits) {
    var whole = bits >> 3;
    for (var i = 0; i < whole; i++) {
      if (digest[i] !== 0) return false;
    }
    var rest = bits & 7;
    return rest === 0 || (digest[whole] >> (8 - rest)) === 0;
  }

  // ------------------------------------------------------------------------------------------
  // SHA-256 (FIPS 180-4), for where WebCrypto is missing

  var K = new Int32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ]);
  var IV = new Int32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
  ]);

  /** One compression of the 64-byte block at `bytes[offset..]` into the state H. */
  function compress(H, W, bytes, offset) {
    var i;
    for (i = 0; i < 16; i++) {
      var o = offset + 4 * i;
      W[i] = (bytes[o] << 24) | (bytes[o + 1] << 16) | (bytes[o + 2] << 8) | bytes[o + 3];
    }
    for (i = 16; i < 64; i++) {
      var x = W[i - 15];
      var y = W[i - 2];
      var s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      var s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    var a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (i = 0; i < 64; i++) {
      var S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      var t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      var S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      var t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }

  /**
   * A hasher of `prefix || nonce` for many nonces: the prefix's whole blocks are compressed
   * once (the midstate); each nonce costs the last one or two blocks.
   */
  function PrefixHasher(prefix) {
    var W = new Int32Array(64);
    var full = Math.floor(prefix.length / 64);
    var mid = new Int32Array(IV);
    for (var b = 0; b < full; b++) compress(mid, W, prefix, b * 64);
    var restLen = prefix.length - full * 64;
    var total = prefix.length + 8;
    var tailLen = Math.ceil((restLen + 8 + 9) / 64) * 64;
    var tail = new Uint8Array(tailLen);
    tail.set(prefix.subarray(full * 64), 0);
    tail[restLen + 8] = 0x80;
    // The message length in bits, big endian, in the last 8 bytes (< 2^32 here).
    var bits = total * 8;
    tail[tailLen - 4] = bits >>> 24;
    tail[tailLen - 3] = (bits >>> 16) & 0xff;
    tail[tailLen - 2] = (bits >>> 8) & 0xff;
    tail[tailLen - 1] = bits & 0xff;
    var H = new Int32Array(8);
    var out = new Uint8Array(32);
    /** The digest of prefix || n (a view that the next call overwrites). */
    this.digest = function (n) {
      putNonce(tail, restLen, n);
      H.set(mid);
      for (var o = 0; o < tailLen; o += 64) compress(H, W, tail, o);
      for (var i = 0; i < 8; i++) {
        out[4 * i] = H[i] >>> 24;
        out[4 * i + 1] = (H[i] >>> 16) & 0xff;
        out[4 * i + 2] = (H[i] >>> 8) & 0xff;
        out[4 * i + 3] = H[i] & 0xff;
      }
      return out;
    };
  }

  // ------------------------------------------------------------------------------------------
  // Solvers

  function now() {
    return (self.performance && self.performance.now) ? self.performance.now() : Date.now();
  }

  function solveJs(job, report) {
    var hasher = new PrefixHasher(ascii(job.challenge));
    var n = job.start;
    var hashes = 0;
    var lastReport = -Infinity; // the first batch reports at once
    for (;;) {
      var stop = Math.min(n + 4096, MAX_NONCE + 1);
      for (; n < stop; n++) {
        hashes += 1;
        if (zeroBits(hasher.digest(n), job.difficulty)) return { nonce: n, hashes: hashes };
      }
      if (n > MAX_NONCE) return null;
      var t = now();
      if (t - lastReport >= PROGRESS_MS) {
        lastReport = t;
        report(hashes);
      }
    }
  }

  function solveWebCrypto(job, report) {
    var subtle = self.crypto.subtle;
    var prefix = ascii(job.challenge);
    // digest() copies its input when called, so one buffer serves a whole batch.
    var message = new Uint8Array(prefix.length + 8);
    message.set(prefix, 0);
    var hashes = 0;
    var lastReport = -Infinity; // the first batch reports at once
    function batch(first) {
      var count = Math.min(BATCH, MAX_NONCE + 1 - first);
      if (count <= 0) return Promise.resolve(null);
      var pending = new Array(count);
      for (var i = 0; i < count; i++) {
        putNonce(message, prefix.length, first + i);
        pending[i] = subtle.digest('SHA-256', message);
      }
      return Promise.all(pending).then(function (digests) {
        for (var j = 0; j < count; j++) {
          if (zeroBits(new Uint8Array(digests[j]), job.difficulty)) {
            return { nonce: first + j, hashes: hashes + j + 1 };
          }
        }
        hashes += count;
        var t = now();
        if (t - lastReport >= PROGRESS_MS) {
          lastReport = t;
          report(hashes);
        }
        return batch(first + count);
      });
    }
    return batch(job.start);
  }

  self.onmessage = function (event) {
    var data = event.data || {};
    var job = {
      challenge: String(data.challenge || ''),
      difficulty: Math.max(0, Math.min(32, Number(data.difficulty) | 0)),
      start: Math.max(0, Math.floor(Number(data.start) || 0))
    };
    var started = now();
    var report = function (hashes) { self.postMessage({ type: 'progress', hashes: hashes }); };
    var done = function (method) {
      return function (found) {
        if (!found) {
          self.postMessage({ type: 'error', message: 'no nonce up to 2^53 - 1' });
          return;
        }
        self.postMessage({
          type: 'done',
          nonce: found.nonce,
          hashes: found.hashes,
          ms: Math.round(now() - started),
          method: method
        });
      };
    };
    var fail = function (e) {
      self.postMessage({ type: 'error', message: String((e && e.message) || e) });
    };
    var useWebCrypto = !data.fallback && self.crypto && self.crypto.subtle &&
      typeof self.crypto.subtle.digest === 'function';
    if (useWebCrypto) {
      solveWebCrypto(job, report).then(done('webcrypto'), function () {
        // WebCrypto refused (an old engine): the bundled hash does the same work.
        try { done('js')(solveJs(job, report)); } catch (e) { fail(e); }
      });
    } else {
      try { done('js')(solveJs(job, report)); } catch (e) { fail(e); }
    }
  };
}());
