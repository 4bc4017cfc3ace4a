-- wr_control.lua: one sale's figures for the control room (GET /w/{sale}/control/data), in one
-- round trip. Read-only; polled every second or two by each admin watching.
--
-- The state is sale_state (lib/prelude.lua), as in wr_stats.lua: closed > sold_out > scheduled >
-- paused > open.
--
-- Live orders (HELD or PAYING) are the members of `holds`. When there are at most ARGV[2] of
-- them the script also reads each one's state from its hash (`<ARGV[1]><order id>`, a key in the
-- sale's slot like every other, so this stays a one-slot script on Redis Cluster); above that it
-- reports the split as -1 (unknown) rather than do unbounded work.
--
-- KEYS[1]  cfg hash (stock_total, opens_at, closes_at, admit_per_second, max_active, paused, closed)
-- KEYS[2]  avail (units available)
-- KEYS[3]  held (units in HELD + PAYING orders)
-- KEYS[4]  sold (units in PAID orders)
-- KEYS[5]  q (the queue, see wr_join.lua)
-- KEYS[6]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[7]  wr hash (admitted_total, abandoned_total, admit_rate_milli; line_length and
--          line_skipped for a spread line: line_counts in lib/prelude.lua)
-- KEYS[8]  holds (zset: live order id -> deadline ms)
-- KEYS[9]  skip (zset: skipped places, see wr_join.lua)
-- ARGV[1]  the prefix of an order hash's key, `<prefix>:{s:<sale>}:o:`
-- ARGV[2]  most live orders whose state is read (0: never read)
--
-- Returns  {state, queue_length, admitted_total, abandoned_total, active, admit_rate_milli,
--           admit_per_second, max_active, stock_total, avail, held, sold, live_orders,
--           orders_held, orders_paying, now_ms, opens_at_ms, closes_at_ms, skipped}
--   queue_length      entries in q, the waiting line (skipped places do not count)
--   skipped           skipped places that may still come back (door.md §6)
--   state             scheduled | open | paused | sold_out | closed | not_found (then all 0)
--   active            admissions whose deadline is still ahead
--   admit_rate_milli  the admitter's smoothed measured rate x 1000, -1 before it measured
--   max_active        0 = no limit
--   orders_held / orders_paying  live orders in each state, -1 when not read (see above)
--   every other item an integer; a missing field or counter reads as 0
local now = clock()

local c = redis.call('HMGET', KEYS[1], 'stock_total', 'opens_at', 'closes_at', 'admit_per_second',
  'max_active', 'paused', 'closed')
if not c[2] then
  return {'not_found', 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, -1, -1, now, 0, 0, 0}
end
local opens_at, closes_at = num(c[2]), num(c[3])
local avail = num(redis.call('GET', KEYS[2]))
local held = num(redis.call('GET', KEYS[3]))
local sold = num(redis.call('GET', KEYS[4]))
local state = sale_state(now, opens_at, closes_at, c[6], c[7], avail, held)

local live = redis.call('ZCARD', KEYS[8])
local orders_held, orders_paying = -1, -1
local cap = num(ARGV[2])
if live <= cap then
  orders_held, orders_paying = 0, 0
  if live > 0 then
    for _, order in ipairs(redis.call('ZRANGE', KEYS[8], 0, -1)) do
      local s = redis.call('HGET', ARGV[1] .. order, 'state')
      if s == 'held' then
        orders_held = orders_held + 1
      elseif s == 'paying' then
        orders_paying = orders_paying + 1
      end
    end
  end
end

local w = redis.call('HMGET', KEYS[7], 'admitted_total', 'abandoned_total', 'admit_rate_milli')
local waiting, skipped = line_counts(KEYS[1], KEYS[5], KEYS[9], KEYS[7])
return {
  state,
  waiting,
  num(w[1]),
  num(w[2]),
  redis.call('ZCOUNT', KEYS[6], '(' .. fmt(now), '+inf'),
  tonumber(w[3]) or -1,
  num(c[4]),
  num(c[5]),
  num(c[1]),
  avail,
  held,
  sold,
  live,
  orders_held,
  orders_paying,
  now,
  opens_at,
  closes_at,
  skipped,
}
