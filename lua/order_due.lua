-- order_due.lua: live orders whose deadline has passed, for the sweeper. Read-only.
--
-- `holds` holds every HELD and PAYING order with its deadline (hold end, or payment deadline);
-- orders leave it when they end. An entry at or before Redis TIME is due: a HELD one is
-- released as `expired`, a PAYING one is settled with the provider or released as `failed`.
-- Reading the clock here gives every replica the same "now" as the data.
--
-- KEYS[1]  holds (zset: order id text -> deadline, epoch ms)
-- ARGV[1]  most entries to return (1..10000)
--
-- Returns  {now_ms, order_1, deadline_1, order_2, deadline_2, ...}, earliest deadline first.
local now = clock()
local limit = math.min(10000, math.max(1, math.floor(tonumber(ARGV[1]) or 1)))
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now),
  'WITHSCORES', 'LIMIT', 0, limit)
local out = {now}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = tonumber(rows[i + 1])
end
return out
