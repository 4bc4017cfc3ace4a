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
-- KEYS[6]  admch (set: buyers whose admission an order changed; reserve.lua's KEYS[15])
-- ARGV[1]  order id (UUID text, the member of holds)
-- ARGV[2]  payment timeout in ms (integer >= 1)
--
-- Returns  {result, state, qty, deadline_ms, now_ms}
--   result  ok               this call moved the order to PAYING; deadline_ms is the new deadline
--           noop             not HELD: nothing changed; state is the current state
--           deadline_passed  HELD past its deadline: nothing changed (state held)
--           not_found        no such order (state '', numbers 0)
--   An error reply (nothing written) for a malformed argument.
local now = clock()

local timeout = tonumber(ARGV[2])
if timeout == nil or timeout < 1 or timeout ~= math.floor(timeout) then
  return redis.error_reply('ERR begin_payment: payment timeout must be an integer >= 1 ms')
end

local refused, o, qty, deadline = order_at(KEYS[1], 'held', now)
if refused then
  return refused
end
if deadline <= now then
  return {'deadline_passed', o[1], qty, deadline, now}
end

local due = now + timeout
redis.call('HSET', KEYS[1], 'state', 'paying', 'deadline', fmt(due), 'updated', fmt(now))
redis.call('SET', KEYS[2], '1', 'PX', fmt(timeout))
redis.call('ZADD', KEYS[3], fmt(due), ARGV[1])
if redis.call('ZADD', KEYS[4], 'XX', 'GT', 'CH', fmt(due), o[4]) == 1 then
  adm_changed(KEYS[6], o[4])
end
outbox_order(KEYS[5], ARGV[1], o, 'paying', due, now)
return {'ok', 'paying', qty, due, now}
