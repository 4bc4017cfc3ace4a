-- forgotten_hold.lua: is a hold MySQL still shows HELD, past its deadline, one Redis forgot?
-- And if so, end the buyer's admission unless they hold something else (issue #21).
--
-- A Redis failover can lose acknowledged writes: a hold whose whole life is gone from Redis
-- (order hash, timer, deadline index, its units in `held`) has no timer to fire, no index entry
-- to sweep and no outbox entry to carry its end, so MySQL would show it HELD for ever and the
-- buyer's admission (restored by the same loss, or never ended) would keep a place among the
-- active buyers until it times out. The recorder's forgotten-hold check reads, from MySQL,
-- HELD orders well past their deadline (README "Lost Redis writes"), asks this script, and
-- marks the forgotten ones expired in MySQL. An order hash Redis still has means the order is
-- alive in Redis (a late timer, a sweep to come, an outbox entry not recorded yet): the normal
-- arrows end it, and nothing is done here. Order hashes are kept after an order ends, so a
-- missing one is a lost one (or the sale's keys were deleted, which the caller rules out by
-- checking only armed sales).
--
-- The admission is ended only when the buyer has no units in any order Redis knows (no
-- `u:<user>` key): a buyer who meanwhile holds or pays for another order keeps the admission
-- that order's arrows will end. Read and ZREM in one script, so a reserve cannot slip between.
--
-- KEYS[1]  o:<order> (the order hash)
-- KEYS[2]  u:<user uuid text> (the user's units in HELD + PAYING + PAID orders)
-- KEYS[3]  adm (zset: user 16 raw bytes -> admission deadline ms)
-- KEYS[4]  admch (set: buyers whose admission an order changed; reserve.lua's KEYS[15])
-- ARGV[1]  the order's user, 16 raw bytes (the member of adm)
--
-- Returns  {result, admission}
--   result     known       Redis has the order: nothing changed
--              forgotten   Redis has no such order
--   admission  1 when this call ended the buyer's admission, else 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'known', 0}
end
local ended = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  ended = redis.call('ZREM', KEYS[3], ARGV[1])
  if ended == 1 then
    adm_changed(KEYS[4], ARGV[1])
  end
end
return {'forgotten', ended}
