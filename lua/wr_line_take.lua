-- wr_line_take.lua: step 4 of a tick of a line spread over shards (README "A line that
-- outgrows one Redis: the design"; waitroom/src/line/tick.rs): the places the leader chose on
-- this shard leave q for ladm, the shard's outbox towards the sale's adm. An entry in ladm with
-- a negative score (-deadline) is taken and not yet written into adm; wr_line_settle.lua makes
-- it +deadline once adm has it. A place is taken only when it is still in q with the score the
-- leader merged (the buyer may have left, or been skipped, since wr_line_head.lua), so a tick
-- never admits a place that changed under it. Every key is the shard's own.
--
-- KEYS[1]  q of the line shard (zset, the layout of wr_join.lua)
-- KEYS[2]  ladm of the line shard (zset: user -> -queue score while on its way to adm, then
--          +deadline, the shard's copy of adm)
-- KEYS[3]  optional: lwt of the line shard (hash: sampled buyers not yet shown an ETA); a taken
--          place's entry goes (eta_waits in lib/prelude.lua)
-- ARGV[1..] pairs: user (16 raw bytes), score (decimal) as wr_line_head.lua returned it
--
-- Returns  the users taken, in ARGV order (a subset of those asked)
local taken, flat = {}, {}
for i = 1, #ARGV, 2 do
  local user = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and fmt(tonumber(score)) == fmt(tonumber(ARGV[i + 1])) then
    taken[#taken + 1] = user
    flat[#flat + 1] = '-' .. fmt(tonumber(score))
    flat[#flat + 1] = user
  end
end
if #taken > 0 then
  zrem_all(KEYS[1], taken)
  zadd_pairs(KEYS[2], flat)
  if KEYS[3] then
    hdel_users(KEYS[3], taken)
  end
end
return taken
