-- wr_leave.lua: a buyer leaves the waiting room (the "leave the line" button). Idempotent.
--
-- Removes the user's place in the queue, a skipped place too (door.md §6: leaving removes at
-- once, so nothing is left to come back to), and, when admitted, the admission, which frees
-- that max_active slot at once. Calling it again, or for a user who never joined, changes
-- nothing.
--
-- KEYS[1]  q (the queue, see wr_join.lua)
-- KEYS[2]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[3]  skip (zset: skipped places, the layout of q)
-- KEYS[4]  wt (hash: the buyers' report entries; the user's is removed)
-- KEYS[5]  rep (hash: the report's totals; left counts places removed from q or skip)
-- KEYS[6]  optional: a hash whose user entry goes with a place or an admission removed here.
--          On a sale's slot: wtp (hash: sampled buyers not yet shown an ETA, eta_waits in
--          lib/prelude.lua). On a line shard of a spread line: lwte (hash: a first ETA noted
--          and not yet folded, user -> "<eta>:<at>"), so a quick rejoin cannot inherit it
-- ARGV[1]  user id, 16 raw bytes
-- ARGV[2]  optional, on the sale's slot of a spread line: '1' when the call on the user's
--          line shard removed something; then the report's entry (KEYS[4]) goes too, which
--          would otherwise go only with a place in this q, and a spread line has none here
--
-- On a line shard of a spread line (waitroom/src/queue.rs, leave) the same script runs over the
-- shard's keys: KEYS[1] its q, KEYS[2] its ladm (the copy of an admission, or a place a tick
-- took and has not settled), KEYS[3] its qskip, KEYS[4] its lwt (a sampled buyer's wait for a
-- first ETA) and KEYS[5] its lmeta (left, folded into the sale's rep by the next tick).
--
-- Returns  1 when the call removed a place or an admission, 0 when there was nothing to remove.
local in_line = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[3], ARGV[1])
local removed = in_line + redis.call('ZREM', KEYS[2], ARGV[1])
if in_line > 0 then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'left', 1)
elseif ARGV[2] == '1' then
  redis.call('HDEL', KEYS[4], ARGV[1])
end
if removed > 0 and KEYS[6] then
  redis.call('HDEL', KEYS[6], ARGV[1])
end
if removed > 0 then
  return 1
end
return 0
