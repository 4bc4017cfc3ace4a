-- wr_line_position.lua: where buyers stand in a line spread over shards (issue #22 §2;
-- waitroom/src/line.rs): the own shard's rank, exact, plus the other shards' places ahead,
-- counted from the curves the leader last published to this shard's lmeta. Read only, and
-- every key is the shard's own: a poll of a spread line never leaves its shard.
--
-- The curves are packed as line.rs's pack writes them and read by curve_at in lib/prelude.lua.
--
-- KEYS[1]  q of the buyers' line shard (zset: user -> score, the layout of wr_join.lua)
-- KEYS[2]  lmeta of that shard (hash: `others` the sum of the other shards' curves, `at` when
--          the leader read them, epoch ms; `all` and `own` when `others` is missing: see
--          line_curves in lib/prelude.lua)
-- ARGV[1..n]  user ids, 16 raw bytes each
--
-- Returns  {at, position_1, ..., position_n}
--   at        lmeta's `at`, 0 when nothing was published yet
--   position  others ahead + own rank + 1 when the user waits in this shard's q, else 0

local m = redis.call('HMGET', KEYS[2], 'at', 'others')
local others, all, own = line_curves(KEYS[2], m[2])
local out = {num(m[1])}
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    out[i + 1] = line_position(KEYS[1], ARGV[i], tonumber(score), others, all, own)
  else
    out[i + 1] = 0
  end
end
return out
