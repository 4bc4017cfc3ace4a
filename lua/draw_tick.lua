-- draw_tick.lua: one step of a ranked draw's claims and backfill (design/draw.md "Claims and
-- backfill"), run by the draw leader (workers/src/draw.rs) every draw.tick_ms.
--
-- A win is `win[user]`:
--   '<deadline>:<max_quantity>'               open: promoted, no order yet (also in wdl and,
--                                             until the deadline, in adm: the pass works)
--   'ord:<order>:<deadline>:<max_quantity>'   its one order was made (reserve.lua; in wod)
--   'claimed'                                 its order was paid
--   'forfeited'                               no order by the deadline, or the order ended unpaid
-- drw.reserved = Σ max_quantity of the open wins; free = avail - reserved, never below 0.
--
-- In this order, each bounded by ARGV[2] items per call:
--   1. lapse: every open win whose deadline has passed (every open win once the sale is
--      closed: it cannot order any more) → forfeited; out of wdl and adm; reserved -= its
--      max_quantity.
--   2. settle: every ordered win whose order is paid → claimed; whose order ended unpaid
--      (expired, cancelled, failed) → forfeited; out of wod. An order still HELD or PAYING
--      keeps its win ordered (its stock is held, so nobody else is owed it).
--   3. promote, only while the sale is open (not paused, closed or sold out): while free >= 1
--      and ranks remain, the next rank (drw.promoted + 1, the user in rk) gets an open win with
--      max_quantity = min(per_user_limit, free) until now + claim_seconds: win, wdl and
--      `ZADD adm` (the waiting room signs its pass from the win; reserve.lua checks both).
--   4. the end: once the ranking is exhausted with no open or ordered win and stock left, the
--      sale is closed (cfg.closed = 1: "closed" in design/draw.md); `ended` = 1 when the sale
--      is closed or sold out and no win is open or ordered: the leader then mails the entrants
--      never promoted.
-- Every change to a win is appended to the draw outbox (KEYS[10]) in the same step, for the
-- leader to record in MySQL (draw_entries), so nothing a buyer was shown is lost from MySQL
-- while Redis keeps the stream. Entry fields: kind (won|forfeited|claimed), user (16 raw
-- bytes), rank, max_quantity, deadline (epoch ms), order (id text or ''), at (Redis time, ms).
--
-- The order hashes are read by name, `ARGV[1] .. <order id>`: they share the sale's hash tag
-- (`{s:<sale>}`), so this stays one slot on Redis Cluster.
--
-- KEYS[1]  cfg (opens_at, closes_at, paused, closed, per_user_limit, claim_seconds, mode)
-- KEYS[2]  avail
-- KEYS[3]  held
-- KEYS[4]  drw (hash: ranked, promoted, reserved)
-- KEYS[5]  rk (hash: rank -> user, 16 raw bytes)
-- KEYS[6]  win (hash: user -> win, above)
-- KEYS[7]  wdl (zset: open wins, user -> claim deadline ms)
-- KEYS[8]  wod (hash: ordered wins not settled, user -> order id text)
-- KEYS[9]  adm (zset: user -> admission deadline ms)
-- KEYS[10] dev (stream: the draw outbox)
-- ARGV[1]  the order hashes' key prefix (`<prefix>:{s:<sale>}:o:`)
-- ARGV[2]  at most this many lapses, settlements and promotions each per call (>= 1)
--
-- Returns {result, promoted_now, lapsed_now, settled_now, promoted, ranked, ended}
--   result  not_found (no cfg) | unranked (the ranking is not indexed yet: nothing done) | ok
--   promoted, ranked: drw's counters after the step; ended: 0 or 1
--   An error reply for a sale that is not a draw, or a rank missing from rk.
local now = clock()
local limit = tonumber(ARGV[2])
if limit == nil or limit < 1 then
  return redis.error_reply('ERR draw_tick: the per-call bound must be >= 1')
end

local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed',
  'per_user_limit', 'claim_seconds', 'mode')
if not c[1] then
  return {'not_found', 0, 0, 0, 0, 0, 0}
end
if c[7] ~= 'draw' then
  return redis.error_reply('ERR draw_tick: not a draw sale')
end
local d = redis.call('HMGET', KEYS[4], 'ranked', 'promoted', 'reserved')
if not d[1] then
  return {'unranked', 0, 0, 0, 0, 0, 0}
end
local ranked, promoted, reserved = num(d[1]), num(d[2]), num(d[3])
local state = sale_state(now, num(c[1]), num(c[2]), c[3], c[4], KEYS[2], KEYS[3])

local function record(kind, user, rank, max_q, deadline, order)
  redis.call('XADD', KEYS[10], '*', 'kind', kind, 'user', user, 'rank', rank,
    'max_quantity', max_q, 'deadline', deadline, 'order', order, 'at', fmt(now))
end

-- An open win's parts; nil for any other value.
local function open_win(v)
  local deadline, max_q = string.match(v or '', '^(%d+):(%d+)$')
  return tonumber(deadline), tonumber(max_q)
end

-- 1. Lapse.
local upto = fmt(now)
if state == 'closed' then
  upto = '+inf'
end
local lapsed = 0
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', upto, 'LIMIT', 0, limit)) do
  local deadline, max_q = open_win(redis.call('HGET', KEYS[6], user))
  if max_q ~= nil then
    redis.call('HSET', KEYS[6], user, 'forfeited')
    reserved = reserved - max_q
    record('forfeited', user, '', fmt(max_q), fmt(deadline), '')
  end
  redis.call('ZREM', KEYS[7], user)
  redis.call('ZREM', KEYS[9], user)
  lapsed = lapsed + 1
end
if reserved < 0 then
  reserved = 0
end

-- 2. Settle.
local settled = 0
local ordered = redis.call('HGETALL', KEYS[8])
for i = 1, #ordered, 2 do
  if settled >= limit then
    break
  end
  local user, order = ordered[i], ordered[i + 1]
  local o_state = redis.call('HGET', ARGV[1] .. order, 'state')
  local outcome = nil
  if o_state == 'paid' then
    outcome = 'claimed'
  elseif o_state == 'expired' or o_state == 'cancelled' or o_state == 'failed' then
    outcome = 'forfeited'
  end
  if outcome then
    local deadline, max_q = string.match(redis.call('HGET', KEYS[6], user) or '',
      '^ord:[^:]+:(%d+):(%d+)$')
    redis.call('HSET', KEYS[6], user, outcome)
    redis.call('HDEL', KEYS[8], user)
    redis.call('ZREM', KEYS[9], user)
    record(outcome, user, '', max_q or '', deadline or '', order)
    settled = settled + 1
  end
end

-- 3. Promote.
local promoted_now = 0
if state == 'open' then
  local per_user = math.max(1, num(c[5]))
  local claim_ms = num(c[6]) * 1000
  local free = num(redis.call('GET', KEYS[2])) - reserved
  while free >= 1 and promoted < ranked and promoted_now < limit do
    local rank = promoted + 1
    local user = redis.call('HGET', KEYS[5], tostring(rank))
    if not user then
      return redis.error_reply('ERR draw_tick: rank ' .. rank .. ' is missing from the ranking index')
    end
    local max_q = math.min(per_user, free)
    local deadline = now + claim_ms
    redis.call('HSET', KEYS[6], user, fmt(deadline) .. ':' .. fmt(max_q))
    redis.call('ZADD', KEYS[7], fmt(deadline), user)
    redis.call('ZADD', KEYS[9], fmt(deadline), user)
    record('won', user, tostring(rank), fmt(max_q), fmt(deadline), '')
    reserved = reserved + max_q
    free = free - max_q
    promoted = rank
    promoted_now = promoted_now + 1
  end
end
redis.call('HSET', KEYS[4], 'promoted', fmt(promoted), 'reserved', fmt(reserved))

-- 4. The end.
local live = redis.call('ZCARD', KEYS[7]) + redis.call('HLEN', KEYS[8])
if state == 'open' and live == 0 and promoted >= ranked then
  redis.call('HSET', KEYS[1], 'closed', '1')
  state = 'closed'
end
local ended = 0
if live == 0 and (state == 'closed' or state == 'sold_out') then
  ended = 1
end
return {'ok', promoted_now, lapsed, settled, promoted, ranked, ended}
