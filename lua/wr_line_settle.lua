-- wr_line_settle.lua: step 6 of a tick of a line spread over shards (README "A line that
-- outgrows one Redis: the design"; waitroom/src/line/tick.rs): the places the sale's adm now
-- holds stop being pending in this shard's ladm: -deadline becomes +deadline, and ladm is the
-- shard's copy of adm for its buyers' polls. Only an entry still pending with this deadline
-- changes, so a repeat (a leader retrying after a lost reply) does nothing more. Every key is
-- the shard's own.
--
-- KEYS[1]  ladm of the line shard (zset: user -> -deadline pending, +deadline settled)
-- ARGV[1]  the admission deadline, epoch ms, as wr_line_take.lua was given it
-- ARGV[2..] users (16 raw bytes) written into adm
--
-- Returns  the number of entries settled now
local deadline = tonumber(ARGV[1])
local settled = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == -deadline then
    redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
    settled = settled + 1
  end
end
return settled
