-- wr_line_sync.lua: the order side's changes of admissions, carried into one line shard's
-- copies (issue #22 §2; README "A line that outgrows one Redis: the design"). An order moves
-- or ends its buyer's admission in the sale's adm (reserve.lua and begin_payment.lua extend
-- it, confirm.lua and release.lua end it, the repairs end it), and notes the buyer in admch
-- (adm_changed in lib/prelude.lua). Each tick step 1 (wr_line_budget.lua) takes a bounded
-- number of those notes with the buyer's adm deadline as it is then, and the leader hands each
-- shard its own here, so a poll of the shard (wr_line_status.lua) says what the sale's slot
-- says, one tick late.
--
-- Only a settled copy (deadline > 0) follows: a pending entry (below 0) is a place a tick took
-- and has not settled, which the settle writes with the deadline the commit wrote into adm,
-- and a buyer without a copy
-- (left, or admitted before the line was spread) gets none made here.
--
-- KEYS[1]  ladm of the line shard (zset: user -> admission deadline ms; below 0: pending)
-- ARGV     pairs: user id (16 raw bytes), the deadline in adm (epoch ms; 0: no admission)
--
-- Returns  {moved, ended}: copies given the new deadline, copies removed
local moved, ended = 0, 0
for i = 1, #ARGV - 1, 2 do
  local user, deadline = ARGV[i], num(ARGV[i + 1])
  local copy = tonumber(redis.call('ZSCORE', KEYS[1], user))
  if copy and copy > 0 then
    if deadline > 0 then
      if copy ~= deadline then
        redis.call('ZADD', KEYS[1], fmt(deadline), user)
        moved = moved + 1
      end
    else
      redis.call('ZREM', KEYS[1], user)
      ended = ended + 1
    end
  end
end
return {moved, ended}
