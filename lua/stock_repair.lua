-- stock_repair.lua: take back into `sold` the units Redis still offers that MySQL has sold
-- (README "Lost Redis writes", issue #21).
--
-- After a failover that lost acknowledged writes, Redis may have forgotten orders MySQL has
-- booked as paid (`sales.sold` counts them, Redis `sold` does not): their units are back in
-- `avail`, and buyers reserve, pay and are refunded (`WouldOversell`) while the sale never
-- sells out. MySQL's `sales.sold` is the truth for paid units. The caller (the confirm worker
-- on an oversell, the recorder's stock check) reads, in this order: the live order ids in
-- `holds`, then in one MySQL snapshot `stock_total`, `sales.sold` and which of those orders
-- are paid there; then calls this script, which decides with Redis as it is now:
--
--   covered = qty of every live (HELD or PAYING) order in `holds`, except the ones the caller
--             read and MySQL had not paid: a live order MySQL paid is a confirmation in flight
--             (MySQL commits first, then confirm.lua moves it held -> sold), already in `held`;
--             an order that went live after the caller's read is counted as if MySQL had paid
--             it, so the script never takes more than it knows is missing
--   behind  = MySQL sold - Redis sold - covered: paid units Redis counts nowhere but in avail
--   moved   = min(behind, avail): avail -= moved, sold += moved
--
-- `held` is never touched (its orders are live and end by their own arrows), so avail + held +
-- sold = stock_total holds before and after, and avail never goes below 0. What cannot be
-- moved now (behind > avail: the units are in live orders MySQL cannot sell, which will fail
-- or expire and give them back to avail) is answered, and the next call takes it.
--
-- Idempotent and safe against any interleaving: the result is computed from the counters as
-- they are, not applied as a delta, so a second caller (another confirm worker, the recorder)
-- finds Redis `sold` already raised and moves nothing. A stale MySQL read (sold has grown
-- since) only moves less; it can never move units MySQL has not sold. A reserve that runs
-- between the caller's reads and this script is a live order the caller did not read: it is
-- counted in `covered` and so never makes the script take more.
--
-- KEYS[1]  cfg hash (stock_total)
-- KEYS[2]  avail
-- KEYS[3]  held (units in HELD + PAYING orders)
-- KEYS[4]  sold (units in PAID orders)
-- KEYS[5]  holds (zset: live order id -> deadline ms)
-- ARGV[1]  the prefix of an order hash's key, `<prefix>:{s:<sale>}:o:` (the order hashes of
--          the members of holds, in the sale's slot)
-- ARGV[2]  MySQL stock_total (integer >= 0)
-- ARGV[3]  MySQL sales.sold (integer >= 0), read in the same snapshot as the flags below
-- ARGV[4], ARGV[5], ...  pairs: a live order id the caller read from holds before MySQL, and
--          '1' when MySQL had it paid, '0' when not
--
-- Returns  {result, moved, avail, held, sold, behind}: the counters after this call, and the
--          paid units Redis still counts nowhere but in avail after it (behind, >= 0)
--   result  repaired        moved > 0 units from avail to sold
--           in_step         Redis is not behind MySQL: nothing changed
--           held_up         behind, but avail is 0: nothing changed (the units are in live
--                           orders; call again once they end)
--           stock_mismatch  cfg.stock_total differs from MySQL's: nothing changed (the sale
--                           needs `dropline sale rearm`)
--           not_found       the sale is not armed (no cfg hash): numbers 0
--   An error reply (nothing written) for a malformed argument.
local mysql_total, mysql_sold = tonumber(ARGV[2]), tonumber(ARGV[3])
if mysql_total == nil or mysql_sold == nil or mysql_total < 0 or mysql_sold < 0
    or mysql_total ~= math.floor(mysql_total) or mysql_sold ~= math.floor(mysql_sold) then
  return redis.error_reply('ERR stock_repair: stock_total and sold must be integers >= 0')
end
if ARGV[1] == nil or ARGV[1] == '' or #ARGV % 2 ~= 1 then
  return redis.error_reply('ERR stock_repair: an order key prefix and (order, paid) pairs are required')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'not_found', 0, 0, 0, 0, 0}
end

local avail = num(redis.call('GET', KEYS[2]))
local held = num(redis.call('GET', KEYS[3]))
local sold = num(redis.call('GET', KEYS[4]))
if num(redis.call('HGET', KEYS[1], 'stock_total')) ~= mysql_total then
  return {'stock_mismatch', 0, avail, held, sold, 0}
end

local unpaid = {}
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '0' then
    unpaid[ARGV[i]] = true
  end
end
local covered = 0
for _, order in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local o = redis.call('HMGET', ARGV[1] .. order, 'state', 'qty')
  if (o[1] == 'held' or o[1] == 'paying') and not unpaid[order] then
    covered = covered + num(o[2])
  end
end

local behind = mysql_sold - sold - covered
if behind <= 0 then
  return {'in_step', 0, avail, held, sold, 0}
end
local moved = math.min(behind, math.max(avail, 0))
if moved <= 0 then
  return {'held_up', 0, avail, held, sold, behind}
end
redis.call('DECRBY', KEYS[2], fmt(moved))
redis.call('INCRBY', KEYS[4], fmt(moved))
return {'repaired', moved, avail - moved, held, sold + moved, behind - moved}
