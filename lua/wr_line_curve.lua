-- wr_line_curve.lua: what the admitter leader reads of one line shard to count positions
-- across the shards of a spread line (waitroom/src/line.rs, README "A line that outgrows one
-- Redis: the design"). Read only; every key is the shard's own, so the call runs on the
-- shard's primary and nowhere else.
--
-- The checkpoint ranks are line.rs's checkpoint_ranks: the first 32, then 64, 128, 256, ...
-- below the length, then the last; the reply names each rank, so the caller checks them.
--
-- KEYS[1]  q of one line shard (zset: user -> score, the layout of wr_join.lua)
-- ARGV[1..n]  segment bounds (scores, decimal): the count below each is read (line.rs
--          segment_starts)
--
-- Returns  {len, ranked, below}
--   len     the places in q (ZCARD)
--   ranked  flat {rank, score, rank, score, ...} at the checkpoint ranks, scores as decimal
--           strings (exact: scores are integers below 2^53)
--   below   one count per bound, in ARGV order: places with a score below it
local q = KEYS[1]
local len = redis.call('ZCARD', q)

local ranked = {}
local function put(rank, score)
  ranked[#ranked + 1] = rank
  ranked[#ranked + 1] = fmt(tonumber(score))
end

local head = redis.call('ZRANGE', q, 0, 31, 'WITHSCORES')
for i = 1, #head, 2 do
  put((i - 1) / 2, head[i + 1])
end
local rank = 64
local last_put = 31
while rank < len do
  local at = redis.call('ZRANGE', q, rank, rank, 'WITHSCORES')
  put(rank, at[2])
  last_put = rank
  rank = rank * 2
end
-- The last place, unless a power of two was it (a shard of 65, 129, ... places).
if len > 32 and last_put ~= len - 1 then
  local last = redis.call('ZRANGE', q, -1, -1, 'WITHSCORES')
  put(len - 1, last[2])
end

local below = {}
for i = 1, #ARGV do
  below[i] = redis.call('ZCOUNT', q, '-inf', '(' .. ARGV[i])
end
return {len, ranked, below}
