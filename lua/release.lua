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
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(v) return tonumber(v) or 0 end
local function fmt(x) return string.format('%.0f', x) end

local target = ARGV[2]
local from = ({expired = 'held', cancelled = 'held', failed = 'paying'})[target]
if from == nil then
  return redis.error_reply('ERR release: target must be expired, cancelled or failed, got ' .. tostring(target))
end

local o = redis.call('HMGET', KEYS[1], 'state', 'qty', 'deadline', 'user', 'amount', 'currency', 'created', 'idem')
if not o[1] then
  return {'not_found', '', 0, 0, now}
end
local state, qty, deadline = o[1], num(o[2]), num(o[3])
if state ~= from then
  return {'noop', state, qty, deadline, now}
end
if target == 'expired' and deadline > now then
  return {'not_due', state, qty, deadline, now}
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
redis.call('ZREM', KEYS[7], o[4])
redis.call('XADD', KEYS[8], '*', 'order', ARGV[1], 'state', target, 'user', o[4],
  'qty', o[2], 'amount', o[5], 'currency', o[6], 'deadline', fmt(deadline),
  'created', o[7], 'at', fmt(now), 'idem', o[8])
return {'ok', target, qty, deadline, now}
