-- confirm.lua: PAYING → PAID (DESIGN §5), after the payment is recorded in MySQL.
--
-- The units move from held to sold; the user's count u is unchanged (paid units still count
-- toward the per-user limit). The order leaves the deadline index, its timer is deleted, and
-- the buyer's admission ends (ZREM adm: the order ended, so the max_active slot frees).
-- avail + held + sold = stock_total holds before and after.
--
-- A PAYING order is confirmed even past its payment deadline: a payment the provider accepted
-- is never lost, as long as no `failed` release came first. Any other state changes nothing
-- and answers `noop` with the current state, so duplicate and late messages are harmless (a
-- `paid` answer to a redelivery means it was done already; `failed` or another end state means
-- the order was released first and the caller must settle the payment, e.g. refund it).
--
-- KEYS[1]  o:<order> (hash; layout in reserve.lua)
-- KEYS[2]  hold:<order> (the timer)
-- KEYS[3]  holds (zset: order id -> deadline ms)
-- KEYS[4]  held (units in HELD + PAYING orders)
-- KEYS[5]  sold (units in PAID orders)
-- KEYS[6]  adm (zset: user 16 raw bytes -> admission deadline ms)
-- KEYS[7]  events (stream: the order outbox; entry layout in reserve.lua)
-- ARGV[1]  order id (UUID text, the member of holds)
--
-- Returns  {result, state, qty, deadline_ms, now_ms}
--   result  ok         this call moved the order to PAID (state paid)
--           noop       not PAYING: nothing changed; state is the current state
--           not_found  no such order (state '', numbers 0)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(v) return tonumber(v) or 0 end
local function fmt(x) return string.format('%.0f', x) end

local o = redis.call('HMGET', KEYS[1], 'state', 'qty', 'deadline', 'user', 'amount', 'currency', 'created', 'idem')
if not o[1] then
  return {'not_found', '', 0, 0, now}
end
local state, qty, deadline = o[1], num(o[2]), num(o[3])
if state ~= 'paying' then
  return {'noop', state, qty, deadline, now}
end

redis.call('HSET', KEYS[1], 'state', 'paid', 'updated', fmt(now))
redis.call('DECRBY', KEYS[4], qty)
redis.call('INCRBY', KEYS[5], qty)
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[6], o[4])
redis.call('XADD', KEYS[7], '*', 'order', ARGV[1], 'state', 'paid', 'user', o[4],
  'qty', o[2], 'amount', o[5], 'currency', o[6], 'deadline', fmt(deadline),
  'created', o[7], 'at', fmt(now), 'idem', o[8])
return {'ok', 'paid', qty, deadline, now}
