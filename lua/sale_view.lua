-- sale_view.lua: one sale's live view in one round trip: config, counters and the server clock.
--
-- Read-only. Reading the clock here (TIME) rather than in each process means every replica
-- derives a sale's state (scheduled, open, ...) from the same "now" as the data it reads.
--
-- KEYS[1]  the sale's config hash   <prefix>:{s:<sale>}:cfg
-- KEYS[2]  available units           <prefix>:{s:<sale>}:avail
-- KEYS[3]  units held (HELD+PAYING)  <prefix>:{s:<sale>}:held
-- KEYS[4]  units sold (PAID)         <prefix>:{s:<sale>}:sold
-- KEYS[5]  a draw's counters         <prefix>:{s:<sale>}:drw (optional)
-- ARGV     none
--
-- Returns  an empty array when the sale is not armed (no cfg hash); otherwise an array of 16
--          integers, in this order:
--            1 stock_total  2 opens_at (ms)  3 closes_at (ms, 0 = none)  4 per_user_limit
--            5 hold_seconds  6 admit_per_second  7 max_active (0 = no limit)  8 paused (0/1)
--            9 closed (0/1)  10 avail  11 held  12 sold  13 now (Redis server time, epoch ms)
--            14 a draw's promoted wins  15 a draw's ranked entries (both 0 without KEYS[5])
--            16 line_shards (the line's shards, README "A line that outgrows one Redis";
--               0 = one, the sale's own slot)
--          A missing field or counter reads as 0.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local cfg = redis.call('HMGET', KEYS[1], 'stock_total', 'opens_at', 'closes_at', 'per_user_limit',
  'hold_seconds', 'admit_per_second', 'max_active', 'paused', 'closed', 'line_shards')
local out = {}
for i = 1, 9 do
  out[i] = num(cfg[i])
end
out[10] = num(redis.call('GET', KEYS[2]))
out[11] = num(redis.call('GET', KEYS[3]))
out[12] = num(redis.call('GET', KEYS[4]))
out[13] = clock()
out[14], out[15] = 0, 0
out[16] = num(cfg[10])
if KEYS[5] then
  local d = redis.call('HMGET', KEYS[5], 'promoted', 'ranked')
  out[14], out[15] = num(d[1]), num(d[2])
end
return out
