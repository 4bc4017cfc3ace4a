-- wr_line_head.lua: step 2 of a tick of a line spread over shards (README "A line that
-- outgrows one Redis: the design"; waitroom/src/line/tick.rs): the live places at the head of
-- one line shard, for the leader to merge with the other shards' heads. Silent places met on
-- the way (silent for longer than abandon_after, as wr_admit.lua judges them) are skipped here
-- as wr_admit.lua skips them: moved from q to skip with the same member and score, those
-- behind the last live place returned as well, up to the next live one (scan_live's `past`).
-- With a budget of 0 (the leader's tick when nobody can be admitted now) the call only skips
-- the silent places at the shard's head, as wr_admit.lua does every open tick, so that the
-- positions behind them stay honest. The live places stay in q: which of them are admitted is
-- decided across the shards (wr_line_take.lua). Every key is the shard's own.
--
-- KEYS[1]  q of the line shard (zset, the layout of wr_join.lua)
-- KEYS[2]  skip of the line shard (zset: skipped places, the layout of q)
-- ARGV[1]  most live places to return (>= 0: the tick's budget)
-- ARGV[2]  abandon_after in ms: a place silent for longer is skipped; 0 = nobody is silent
--          (the outage credit, which the sale's slot judges)
-- ARGV[3]  most entries to look at (1..100000; bounds the script's run time)
--
-- Returns  {skipped, looked, users, scores, skip_length}
--   skipped  places moved from q to skip now (the leader adds them to wr.skipped_total)
--   looked   entries looked at; equal to ARGV[3] when the scan limit stopped the call
--   users    the live places in score order, 16-byte ids, at most ARGV[1]
--   scores   their scores, decimal strings (exact: integers below 2^53)
--   skip_length  ZCARD of the shard's skip after the call (the leader sums the shards' into
--            wr.line_skipped with the line's length, for /stats and the control room)
local _, now_s = clock()
local budget = math.max(0, math.floor(num(ARGV[1])))
local abandon_ms = num(ARGV[2])
if abandon_ms <= 0 then
  abandon_ms = math.huge
end
local scan_limit = math.min(100000, math.max(1, math.floor(num(ARGV[3]))))

local users, scores, skipped, looked = scan_live(KEYS[1], budget, scan_limit, now_s, abandon_ms,
  true)
local gone = {}
for i = 2, #skipped, 2 do
  gone[#gone + 1] = skipped[i]
end
for i = 1, #scores do
  scores[i] = fmt(scores[i])
end
if #gone > 0 then
  zrem_all(KEYS[1], gone)
  zadd_pairs(KEYS[2], skipped)
end
return {#gone, looked, users, scores, redis.call('ZCARD', KEYS[2])}
