-- wr_line_fold.lua: takes a line shard's own counters out of its lmeta, and the first ETAs its
-- polls and joins noted, for the admitter's leader to add to the sale's wr, rep and wt (issue
-- #22 §2; waitroom/src/line/tick.rs, fold). A poll (revisit in lib/prelude.lua), the reaper
-- (wr_reap.lua) and a leave (wr_leave.lua) on a line shard count into the shard's lmeta, and a
-- sampled buyer's first ETA is noted in the shard's lwte (note_line_eta in lib/prelude.lua),
-- since they cannot reach the sale's slot; /stats, the control room and the report read the
-- sale's hashes. Taking them is atomic, so two folds at once never carry the same count or
-- ETA twice; a leader that dies between this call and its writes on the sale's slot loses
-- that one batch (the report then says a little less, never more).
--
-- KEYS[1]  lmeta of the line shard (hash)
-- KEYS[2]  lwte of the line shard (hash: user -> "<first ETA ms>:<shown at ms>")
-- ARGV[1]  most ETAs to take (>= 0; more wait for the next fold)
-- ARGV[2..n+1]  the counter fields to take (skipped_total, abandoned_total, returned_total,
--          left)
--
-- Returns  {count_1, ..., count_n, etas}: what each field held (0 for none), the fields gone;
--          etas flat {user, "<eta>:<shown>", ...}, those entries gone from lwte
local out = {}
for i = 2, #ARGV do
  out[i - 1] = num(redis.call('HGET', KEYS[1], ARGV[i]))
end
if #ARGV > 1 then
  redis.call('HDEL', KEYS[1], unpack(ARGV, 2))
end
local most = math.max(0, math.floor(num(ARGV[1])))
local etas = {}
if most > 0 then
  if redis.call('HLEN', KEYS[2]) <= most then
    etas = redis.call('HGETALL', KEYS[2])
    redis.call('DEL', KEYS[2])
  else
    etas = redis.call('HRANDFIELD', KEYS[2], most, 'WITHVALUES')
    for i = 1, #etas, 2 do
      redis.call('HDEL', KEYS[2], etas[i])
    end
  end
end
out[#out + 1] = etas
return out
