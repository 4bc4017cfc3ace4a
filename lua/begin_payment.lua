-- begin_payment.lua: HELD → PAYING (DESIGN §5), before the payment request is published.
--
-- The order's deadline becomes now + the payment timeout, so the hold cannot expire while its
-- payment is in flight: the deadline index `holds` gets the new deadline and the hold timer is
-- set again to fire at it (SET PX, not deleted). When the timer fires for a PAYING order, the
-- expiry worker (and the sweeper, over `holds`) learns of a payment with no outcome by its
-- deadline, and settles it (asks the provider) or fails it with release.lua `failed`; an
-- `expired` release of a PAYING order changes nothing. The buyer's admission is kept at least
-- as long (`ZADD adm XX GT`), since the order is still live.
--
-- The new deadline may be earlier than the hold's end: from here it is the payment's deadline.
--
-- Calling it on a PAYING order changes nothing and answers `noop` with state `paying` (paying
-- twice is harmless, and the deadline does not move again). Every other state: `noop` with the
-- current state. A HELD order whose deadline has passed (its expiry not processed yet) is not
-- moved either: `deadline_passed`, and the expiry worker releases it as usual.
--
-- KEYS[1]  o:<order> (hash: user, qty, state, deadline, ...; layout in reserve.lua)
-- KEYS[2]  hold:<order> (the timer)
-- KEYS[3]  holds (zset: order id -> deadline ms)
-- KEYS[4]  adm (zset: user 16 raw bytes -> admission deadline ms)
-- KEYS[5]  events (stream: the order outbox; entry layout in reserve.lua)
-- ARGV[1]  order id (UUID text, the member of holds)
-- ARGV[2]  payment timeout in ms (integer >= 1)
--
-- Returns  {result, state, qty, deadline_ms, now_ms}
--   result  ok               this call moved the order to PAYING; deadline_ms is the new deadline
--           noop             not HELD: nothing changed; state is the current state
--           deadline_passed  HELD past its deadline: nothing changed (state held)
--           not_found        no such order (state '', numbers 0)
--   An error reply (nothing written) for a malformed argument.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(v) return tonumber(v) or 0 end
local function fmt(x) return string.format('%.0f', x) end

local timeout = tonumber(ARGV[2])
if timeout == nil or timeout < 1 or timeout ~= math.floor(timeout) then
  return redis.error_reply('ERR begin_payment: payment timeout must be an integer >= 1 ms')
end

local o = redis.call('HMGET', KEYS[1], 'state', 'qty', 'deadline', 'user', 'amount', 'currency', 'created', 'idem')
if not o[1] then
  return {'not_found', '', 0, 0, now}
end
local state, qty, deadline = o[1], num(o[2]), num(o[3])
if state ~= 'held' then
  return {'noop', state, qty, deadline, now}
end
if deadline <= now then
  return {'deadline_passed', state, qty, deadline, now}
end

local due = now + timeout
redis.call('HSET', KEYS[1], 'state', 'paying', 'deadline', fmt(due), 'updated', fmt(now))
redis.call('SET', KEYS[2], '1', 'PX', fmt(timeout))
redis.call('ZADD', KEYS[3], fmt(due), ARGV[1])
redis.call('ZADD', KEYS[4], 'XX', 'GT', fmt(due), o[4])
redis.call('XADD', KEYS[5], '*', 'order', ARGV[1], 'state', 'paying', 'user', o[4],
  'qty', o[2], 'amount', o[5], 'currency', o[6], 'deadline', fmt(due),
  'created', o[7], 'at', fmt(now), 'idem', o[8])
return {'ok', 'paying', qty, due, now}
