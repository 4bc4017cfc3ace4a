-- reserve.lua: take stock for one new order in one atomic step (DESIGN §5: → HELD).
--
-- Checks, in this order, and the first that fails answers (nothing is written then):
--   1. the idempotency key (KEYS[9], scoped to the user): seen with the same fingerprint →
--      `existing` (the order the key made; the caller reads its current state); seen with
--      another fingerprint → `idempotency_key_reused`. Only a created order stores a key, so a
--      request refused below may be retried with the same key.
--   2. the sale, from cfg and Redis TIME (sale_state in lib/prelude.lua, without sold_out):
--      closed (cfg.closed, or closes_at > 0 and now >= closes_at), scheduled (now < opens_at)
--      or paused (cfg.paused) → `sale_not_open`.
--      Paused blocks new reservations too (orders already live carry on: pay, confirm, expire).
--   3. the caller is an active admitted buyer: adm holds the user with a deadline > now.
--   4. the per-user limit: u + quantity <= cfg.per_user_limit, where u counts the user's units
--      in HELD, PAYING and PAID orders of this sale.
--   5. stock: avail >= quantity (`sold_out` carries what is left, which may be less than asked).
--   A draw sale (cfg.mode = draw, design/draw.md "Claims and backfill") also needs, after 3, an
--   open win: win[user] = '<claim deadline ms>:<max_quantity>' with the deadline > now (else
--   `not_admitted`: no win, or its one order was made, or it lapsed), and quantity <=
--   max_quantity (else `limit_exceeded` with max_quantity as the limit). The order then marks
--   the win ordered ('ord:<order>:<deadline>:<max_quantity>'), takes it out of the open wins'
--   deadlines (wdl), records it for settlement (wod: user -> order) and gives back its
--   reservation (drw.reserved -= max_quantity): the stock it did not buy becomes free for the
--   next rank (draw_tick.lua). Stock never refuses a win ordering <= max_quantity in time:
--   draw_tick.lua promotes only while avail - drw.reserved >= 1.
-- Then: avail -= q, held += q, u += q; the order hash (state held, deadline = now +
-- cfg.hold_seconds); the hold timer (a string whose only job is its TTL: its keyspace `expired`
-- event tells the expiry worker); the deadline index `holds` (the sweeper's source of truth);
-- the idempotency key (order id + fingerprint, with a TTL); and `ZADD adm XX GT deadline user`,
-- so the buyer stays active while the order lives (waitroom queue.rs, "the order side").
-- avail + held + sold = stock_total holds before and after.
--
-- The outbox: every script that moves an order (this one, begin_payment, confirm, release)
-- appends the order's new row to the sale's `events` stream in the same atomic step (outbox in
-- lib/prelude.lua, the one XADD), so MySQL
-- (written by the workers' recorder, which reads the stream with a consumer group) can never
-- miss a state change. Entry fields: order, state, user (16 raw bytes), qty, amount, currency,
-- deadline, created, at (the arrow's Redis time, epoch ms), idem.
--
-- Order hash fields (o:<order>): user (16 raw bytes, the adm member), qty, amount (price x qty,
-- minor units, computed exactly: see mul_exact), currency, state (held|paying|paid|expired|cancelled|failed), deadline (epoch
-- ms: hold end while HELD, payment deadline while PAYING), created, updated (epoch ms), idem
-- (the client's idempotency key). rereport.lua adds rr_n, rr_next and parked to a PAYING
-- order (the expiry worker's re-report backoff and the confirm worker's parked mark).
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, per_user_limit, hold_seconds, price, currency)
-- KEYS[2]  avail (units available)
-- KEYS[3]  held (units in HELD + PAYING orders)
-- KEYS[4]  adm (zset: user 16 raw bytes -> admission deadline, epoch ms)
-- KEYS[5]  holds (zset: order id text -> deadline, epoch ms)
-- KEYS[6]  u:<user uuid text> (units of the user in HELD + PAYING + PAID orders)
-- KEYS[7]  o:<order> (the new order's hash)
-- KEYS[8]  hold:<order> (the hold timer)
-- KEYS[9]  idem:<user uuid text>:<idempotency key> (hash: order, fp)
-- KEYS[10] events (stream: the order outbox, see below)
-- KEYS[11] win (hash, draw sales: user 16 raw bytes -> the win; see draw_tick.lua)
-- KEYS[12] wdl (zset, draw sales: open wins without an order, user -> claim deadline ms)
-- KEYS[13] wod (hash, draw sales: ordered wins not settled yet, user -> order id text)
-- KEYS[14] drw (hash, draw sales: the draw's counters; reserved = units held for open wins)
--          (KEYS 11-14 are read only for a draw sale)
-- KEYS[15] admch (set: buyers whose admission an order changed, for a spread line's copies
--          of adm: adm_changed in lib/prelude.lua)
-- ARGV[1]  order id, UUID text (new; an order hash that already exists is an error)
-- ARGV[2]  user id, 16 raw bytes
-- ARGV[3]  quantity, integer in 1..10^9
-- ARGV[4]  idempotency key as the client sent it (non-empty)
-- ARGV[5]  request fingerprint (the wrapper sends "<sale>:<quantity>")
-- ARGV[6]  idempotency key TTL in ms (>= 1; the wrapper sends 24 h)
--
-- Returns, by the first item:
--   {'created', order, 'held', qty, amount, currency, deadline_ms, now_ms}
--                                        amount as decimal text (exact past 2^53)
--   {'existing', order}                  same key, same fingerprint: nothing changed
--   {'idempotency_key_reused', order}    same key, other fingerprint: nothing changed
--   {'sale_not_open', sale_state}        sale_state: closed | scheduled | paused
--   {'not_admitted'}                     no admission, or its deadline has passed
--   {'limit_exceeded', owned, limit}     owned: the user's units already counted
--   {'sold_out', available}              available < quantity
--   {'not_found'}                        the sale is not armed (no cfg hash)
--   An error reply (nothing written) for a malformed argument, a malformed cfg, or an order id
--   that already has a hash.
local now = clock()

local order, user, idem_key, fp = ARGV[1], ARGV[2], ARGV[4], ARGV[5]
local qty = tonumber(ARGV[3])
if qty == nil or qty ~= math.floor(qty) or qty < 1 or qty > 1000000000 then
  return redis.error_reply('ERR reserve: quantity must be an integer >= 1, got ' .. tostring(ARGV[3]))
end
if order == nil or order == '' then
  return redis.error_reply('ERR reserve: order id is required')
end
if user == nil or #user ~= 16 then
  return redis.error_reply('ERR reserve: user id must be 16 raw bytes')
end
if idem_key == nil or idem_key == '' or fp == nil or fp == '' then
  return redis.error_reply('ERR reserve: idempotency key and fingerprint are required')
end
local idem_ttl = tonumber(ARGV[6])
if idem_ttl == nil or idem_ttl < 1 or idem_ttl ~= math.floor(idem_ttl) then
  return redis.error_reply('ERR reserve: idempotency TTL must be an integer >= 1 ms')
end

-- 1. Idempotency.
local prior = redis.call('HMGET', KEYS[9], 'order', 'fp')
if prior[1] then
  if prior[2] == fp then
    return {'existing', prior[1]}
  end
  return {'idempotency_key_reused', prior[1]}
end
if redis.call('EXISTS', KEYS[7]) == 1 then
  return redis.error_reply('ERR reserve: order ' .. order .. ' already exists')
end

-- 2. The sale.
local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed',
  'per_user_limit', 'hold_seconds', 'price', 'currency', 'mode')
if not c[1] then
  return {'not_found'}
end
local sale = sale_state(now, num(c[1]), num(c[2]), c[3], c[4])
if sale ~= 'open' then
  return {'sale_not_open', sale}
end
local limit, hold_s, price = tonumber(c[5]), tonumber(c[6]), tonumber(c[7])
if limit == nil or hold_s == nil or hold_s < 1 or price == nil or not c[8] then
  return redis.error_reply('ERR reserve: the sale cfg lacks per_user_limit, hold_seconds, price or currency')
end

-- 3. An active admitted buyer.
local admitted = tonumber(redis.call('ZSCORE', KEYS[4], user))
if admitted == nil or admitted <= now then
  return {'not_admitted'}
end

-- 3b. A draw sale: an open win, and the quantity within it.
local win_max = nil
if c[9] == 'draw' then
  local win = redis.call('HGET', KEYS[11], user)
  local w_deadline, w_max = nil, nil
  if win then
    w_deadline, w_max = string.match(win, '^(%d+):(%d+)$')
  end
  if w_deadline == nil or tonumber(w_deadline) <= now then
    return {'not_admitted'}
  end
  win_max = tonumber(w_max)
  if qty > win_max then
    return {'limit_exceeded', num(redis.call('GET', KEYS[6])), win_max}
  end
end

-- 4. The per-user limit.
local owned = num(redis.call('GET', KEYS[6]))
if owned + qty > limit then
  return {'limit_exceeded', owned, limit}
end

-- 5. Stock.
local avail = num(redis.call('GET', KEYS[2]))
if avail < qty then
  return {'sold_out', avail}
end

-- Take it.
local hold_ms = hold_s * 1000
local deadline = now + hold_ms
local amount = mul_exact(price, qty)
redis.call('DECRBY', KEYS[2], qty)
redis.call('INCRBY', KEYS[3], qty)
redis.call('INCRBY', KEYS[6], qty)
redis.call('HSET', KEYS[7],
  'user', user,
  'qty', fmt(qty),
  'amount', amount,
  'currency', c[8],
  'state', 'held',
  'deadline', fmt(deadline),
  'created', fmt(now),
  'updated', fmt(now),
  'idem', idem_key)
redis.call('SET', KEYS[8], '1', 'PX', fmt(hold_ms))
redis.call('ZADD', KEYS[5], fmt(deadline), order)
redis.call('HSET', KEYS[9], 'order', order, 'fp', fp)
redis.call('PEXPIRE', KEYS[9], fmt(idem_ttl))
if redis.call('ZADD', KEYS[4], 'XX', 'GT', 'CH', fmt(deadline), user) == 1 then
  adm_changed(KEYS[15], user)
end
if win_max ~= nil then
  local win = redis.call('HGET', KEYS[11], user)
  redis.call('HSET', KEYS[11], user, 'ord:' .. order .. ':' .. win)
  redis.call('ZREM', KEYS[12], user)
  redis.call('HSET', KEYS[13], user, order)
  redis.call('HINCRBY', KEYS[14], 'reserved', -win_max)
end
outbox(KEYS[10], order, 'held', user, fmt(qty), amount, c[8], fmt(deadline),
  fmt(now), fmt(now), idem_key)
return {'created', order, 'held', qty, amount, c[8], deadline, now}
