-- rereport.lua: whether the expiry worker may report a PAYING order's payment decision again
-- now, and the mark of a completion the confirm worker parked (issue #17, hole 5).
--
-- A PAYING order past its payment deadline whose payment the provider already decided is
-- reported again (`payment.completed`) in case the first report was lost. When the confirm
-- worker lags, every copy waits in its queue, so one order's re-reports back off: the n-th
-- claim opens a window of min(base * 2^(n-1), max) ms in which no other claim is granted. The
-- claim is one atomic step, so of several expiry workers (and a sweep racing a timer event)
-- only one reports per window. A completion the confirm worker parked is not re-sent by the
-- sweeper at all: an operator re-sends it (`dropline payments resend <order>`), which clears
-- the mark. The state lives in the order hash, in the sale's slot (Redis Cluster), and goes
-- with it.
--
-- Order hash fields (o:<order>, layout in reserve.lua) used only here:
--   rr_n     claims granted so far (re-reports, and parked reminders)
--   rr_next  epoch ms before which no claim is granted
--   parked   epoch ms when the confirm worker parked a completion of the order
--
-- Operations (ARGV[1]):
--   claim     the sweeper or a timer event asks to settle a PAYING order with the provider
--             (and re-report its decision). Granted only to a PAYING order past its payment
--             deadline (by Redis TIME) whose window is closed: rr_n += 1 and a new window opens. A parked order gets
--             `parked` instead of `ok`, and its window advances the same way (the sweeper's
--             reminder in the log backs off too).
--   giveback  the claim numbered ARGV[2] could not be used (the provider or the broker
--             failed): when it is still the last one, rr_n -= 1 and the window closes, so the
--             next sweep tries again at once instead of a window later.
--   park      the confirm worker parks a completion: set `parked` (only on an existing order).
--   unpark    an operator re-sent the completion: clear `parked`, restart the backoff at the
--             first step and open a first window (the re-sent copy is on its way).
--
-- KEYS[1]  o:<order> (hash)
-- ARGV[1]  claim | giveback | park | unpark
-- ARGV[2]  claim, unpark: the first window in ms (>= 1); giveback: the claim's number
-- ARGV[3]  claim: the longest window in ms (>= the first)
--
-- Returns  {result, state, n, until_ms, now_ms}: state is the order's, n its rr_n and until_ms
--          its rr_next after the call (0 when unset).
--   result  ok          claim: granted (report now); giveback, park, unpark: done
--           wait        claim: a window is open until until_ms (another claim reported)
--           parked      claim: the order carries the parked mark; do not report
--           not_paying  claim: the order is not PAYING (nothing changed)
--           not_due     claim: its payment deadline is still ahead (nothing changed)
--           stale       giveback: a later claim was granted meanwhile (nothing changed)
--           not_found   no such order (state '', numbers 0); nothing written
--   An error reply (nothing written) for an unknown operation or a bad number.
local now = clock()
local key, op = KEYS[1], ARGV[1]

local o = redis.call('HMGET', key, 'state', 'rr_n', 'rr_next', 'parked', 'deadline')
if not o[1] then
  return {'not_found', '', 0, 0, now}
end
local state, n, next_ms, parked, deadline = o[1], num(o[2]), num(o[3]), o[4], num(o[5])

local function window(k, base, max)
  -- base * 2^(k-1), capped; the exponent is capped first so the double never overflows.
  return math.min(base * 2 ^ math.min(k - 1, 40), max)
end

if op == 'claim' then
  local base, max = tonumber(ARGV[2]), tonumber(ARGV[3])
  if not base or not max or base < 1 or max < base then
    return redis.error_reply('ERR rereport: claim needs 1 <= base <= max, got ' .. tostring(ARGV[2]) .. ', ' .. tostring(ARGV[3]))
  end
  if state ~= 'paying' then
    return {'not_paying', state, n, next_ms, now}
  end
  if deadline > now then
    return {'not_due', state, n, next_ms, now}
  end
  if next_ms > now then
    return {'wait', state, n, next_ms, now}
  end
  n = n + 1
  next_ms = now + window(n, base, max)
  redis.call('HSET', key, 'rr_n', fmt(n), 'rr_next', fmt(next_ms))
  if parked then
    return {'parked', state, n, next_ms, now}
  end
  return {'ok', state, n, next_ms, now}
elseif op == 'giveback' then
  local claimed = tonumber(ARGV[2])
  if not claimed then
    return redis.error_reply('ERR rereport: giveback needs the claim number')
  end
  if claimed ~= n or n < 1 then
    return {'stale', state, n, next_ms, now}
  end
  redis.call('HSET', key, 'rr_n', fmt(n - 1), 'rr_next', '0')
  return {'ok', state, n - 1, 0, now}
elseif op == 'park' then
  redis.call('HSET', key, 'parked', fmt(now))
  return {'ok', state, n, next_ms, now}
elseif op == 'unpark' then
  local base = tonumber(ARGV[2])
  if not base or base < 1 then
    return redis.error_reply('ERR rereport: unpark needs the first window, got ' .. tostring(ARGV[2]))
  end
  redis.call('HDEL', key, 'parked')
  redis.call('HSET', key, 'rr_n', '0', 'rr_next', fmt(now + base))
  return {'ok', state, 0, now + base, now}
end
return redis.error_reply('ERR rereport: unknown operation ' .. tostring(op))
