-- release.lua: end a live order and give its stock back, exactly once (DESIGN §5).
--
-- The only arrows:
--   HELD   → EXPIRED    target `expired`, only when the deadline has passed by Redis TIME
--                       (an early or stale timer event cannot expire a live hold: `not_due`)
--   HELD   → CANCELLED  target `cancelled` (the buyer cancels)
--   PAYING → FAILED     target `failed` (the provider declined, or no outcome by the payment
--                       deadline: the caller decides and passes `failed`)
-- On an arrow: avail += qty, held -= qty, u -= qty (the key is deleted at 0), the order leaves
-- the deadline index, its timer is deleted, and the buyer's admission ends (ZREM adm).
-- avail + held + sold = stock_total holds before and after. Any other (state, target) pair
-- changes nothing and answers `noop` with the current state; so does a second release, which
-- finds an end state: the stock came back once.
--
-- KEYS[6] is derived from the order's user, which the caller reads from the order hash first
-- (the user of an order never changes); ARGV[3] repeats that user and must match the hash.
--
-- KEYS[1]  o:<order> (hash; layout in reserve.lua)
-- KEYS[2]  hold:<order> (the timer)
-- KEYS[3]  holds (zset: order id -> deadline ms)
-- KEYS[4]  avail
-- KEYS[5]  held
-- KEYS[6]  u:<user uuid text> (the user's units in HELD + PAYING + PAID orders)
-- KEYS[7]  adm (zset: user 16 raw bytes -> admission deadline ms)
-- KEYS[8]  events (stream: the order outbox; entry layout in reserve.lua)
-- KEYS[9]  admch (set: buyers whose admission an order changed; reserve.lua's KEYS[15])
-- ARGV[1]  order id (UUID text, the member of holds)
-- ARGV[2]  target: expired | cancelled | failed
-- ARGV[3]  the order's user, 16 raw bytes (as in the order hash)
--
-- Returns  {result, state, qty, deadline_ms, now_ms}
--   result  ok         this call made the arrow; state is the target
--           noop       the arrow does not start at the current state: nothing changed; state
--                      is the current state
--           not_due    target expired on a HELD order whose deadline is still ahead: nothing
--                      changed (state held)
--           not_found  no such order (state '', numbers 0)
--   An error reply (nothing written) for an unknown target or a user that does not match.
local now = clock()

local target = ARGV[2]
local from = ({expired = 'held', cancelled = 'held', failed = 'paying'})[target]
if from == nil then
  return redis.error_reply('ERR release: target must be expired, cancelled or failed, got ' .. tostring(target))
end

local refused, o, qty, deadline = order_at(KEYS[1], from, now)
if refused then
  return refused
end
if target == 'expired' and deadline > now then
  return {'not_due', o[1], qty, deadline, now}
end
if o[4] ~= ARGV[3] then
  return redis.error_reply('ERR release: the user does not match the order')
end

redis.call('HSET', KEYS[1], 'state', target, 'updated', fmt(now))
redis.call('INCRBY', KEYS[4], qty)
redis.call('DECRBY', KEYS[5], qty)
if redis.call('DECRBY', KEYS[6], qty) <= 0 then
  redis.call('DEL', KEYS[6])
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
if redis.call('ZREM', KEYS[7], o[4]) == 1 then
  adm_changed(KEYS[9], o[4])
end
outbox_order(KEYS[8], ARGV[1], o, target, deadline, now)
return {'ok', target, qty, deadline, now}
