-- audit_snapshot.lua: one sale's counters and change marker at one moment, for `sale audit`.
--
-- Read-only. The audit reads the order hashes with SCAN, which is not atomic; it takes this
-- snapshot before and after the scan, and only when both are equal (no order arrow in between:
-- every arrow appends to `events`, which moves its last-generated-id) does it compare the
-- counters with the hashes it read.
--
-- KEYS[1]  cfg hash (stock_total, per_user_limit)
-- KEYS[2]  avail
-- KEYS[3]  held (units in HELD + PAYING orders)
-- KEYS[4]  sold (units in PAID orders)
-- KEYS[5]  holds (zset: live order id -> deadline ms)
-- KEYS[6]  events (stream: the order outbox)
-- ARGV     none
--
-- Returns  an empty array when the sale is not armed (no cfg hash); otherwise
--            1 stock_total  2 per_user_limit  3 avail  4 held  5 sold  6 members of holds
--            7 entries in events  8 the last id events generated ('' when it has none)
--            9 now (Redis server time, epoch ms)
--          Integers (a missing field or counter reads as 0), item 8 a string.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local cfg = redis.call('HMGET', KEYS[1], 'stock_total', 'per_user_limit')
local out = {
  num(cfg[1]),
  num(cfg[2]),
  num(redis.call('GET', KEYS[2])),
  num(redis.call('GET', KEYS[3])),
  num(redis.call('GET', KEYS[4])),
  redis.call('ZCARD', KEYS[5]),
  0,
  '',
}
if redis.call('EXISTS', KEYS[6]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[6])
  for i = 1, #info, 2 do
    if info[i] == 'length' then
      out[7] = info[i + 1]
    elseif info[i] == 'last-generated-id' then
      out[8] = info[i + 1]
    end
  end
end
out[9] = clock()
return out
