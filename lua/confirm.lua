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
-- KEYS[8]  admch (set: buyers whose admission an order changed; reserve.lua's KEYS[15])
-- ARGV[1]  order id (UUID text, the member of holds)
--
-- Returns  {result, state, qty, deadline_ms, now_ms}
--   result  ok         this call moved the order to PAID (state paid)
--           noop       not PAYING: nothing changed; state is the current state
--           not_found  no such order (state '', numbers 0)
local now = clock()

local refused, o, qty, deadline = order_at(KEYS[1], 'paying', now)
if refused then
  return refused
end

redis.call('HSET', KEYS[1], 'state', 'paid', 'updated', fmt(now))
redis.call('DECRBY', KEYS[4], qty)
redis.call('INCRBY', KEYS[5], qty)
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
if redis.call('ZREM', KEYS[6], o[4]) == 1 then
  adm_changed(KEYS[8], o[4])
end
outbox_order(KEYS[7], ARGV[1], o, 'paid', deadline, now)
return {'ok', 'paid', qty, deadline, now}
