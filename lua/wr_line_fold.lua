-- wr_line_fold.lua: takes a line shard's own counters out of its lmeta, for the admitter's
-- leader to add to the sale's wr or rep (issue #22 §2; waitroom/src/line/tick.rs, fold). A
-- poll (revisit in lib/prelude.lua), the reaper (wr_reap.lua) and a leave (wr_leave.lua) on a
-- line shard count into the shard's lmeta, since they cannot reach the sale's slot; /stats,
-- the control room and the report read the sale's hashes. Taking them is atomic, so two folds at once never carry the same count twice; a
-- leader that dies between this call and its HINCRBY on the sale's slot loses that one
-- batch of counts (the report then says a little less, never more).
--
-- KEYS[1]  lmeta of the line shard (hash)
-- ARGV[1..n]  the counter fields to take (skipped_total, abandoned_total, returned_total, left)
--
-- Returns  {count_1, ..., count_n}: what each field held (0 for none); the fields are gone.
local out = {}
for i = 1, #ARGV do
  out[i] = num(redis.call('HGET', KEYS[1], ARGV[i]))
end
redis.call('HDEL', KEYS[1], unpack(ARGV))
return out
