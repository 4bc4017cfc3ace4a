-- wr_line_settle.lua: step 6 of a tick of a line spread over shards (README "A line that
-- outgrows one Redis: the design"; waitroom/src/line/tick.rs): the places the sale's adm now
-- holds stop being pending in this shard's ladm: the negative score (-queue score) becomes the
-- admission's deadline, and ladm is the shard's copy of adm for its buyers' polls. Only an
-- entry still pending changes, so a repeat (a leader retrying after a lost reply) does nothing
-- more. Every key is the shard's own.
--
-- KEYS[1]  ladm of the line shard (zset: user -> -queue score pending, +deadline settled)
-- ARGV[1..] pairs: user (16 raw bytes), the deadline adm holds (epoch ms), as
--          wr_line_commit.lua answered them
--
-- Returns  the number of entries settled now
local settled = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) < 0 then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[i + 1], ARGV[i])
    settled = settled + 1
  end
end
return settled
