-- wr_reap.lua: housekeeping for one sale, in bounded batches (run by the admitter leader).
--
-- 1. Removes up to `batch` admissions whose deadline has passed. Admission counts already
--    ignore them (wr_admit counts deadlines still ahead), so this only returns their memory;
--    the max_active slot was free the moment the deadline passed.
-- 2. Walks up to `batch` queue entries from a cursor (the next order key to look at, wr field
--    reap_from) and skips users silent for longer than abandon_after (layout and rule: see
--    wr_join.lua): moves them to skip with the same score, or removes them when they are
--    silent past the return grace too. This keeps queue_length and positions honest deep in
--    the line; the head is also cleaned by wr_admit itself.
-- 3. Walks up to `batch` skipped places from a cursor of its own (wr field reap_skip_from) and
--    removes those silent past the return grace: those places are lost (door.md §6), counted
--    in abandoned_total.
-- Within the outage credit (wr.resumed_at, written by wr_admit.lua: until abandon_after has
-- passed since an outage ended) steps 2 and 3 skip and remove nobody.
-- Each cursor goes back to the head after the tail, so repeated calls sweep both sets; a full
-- pass takes ceil(max(queue_length, skipped) / batch) calls. The stamp of a skipped place
-- wraps after 65536 s, so a pass must come round well within 65536 s minus the grace (the
-- admitter reaps every second).
--
-- KEYS[1]  q (the queue)
-- KEYS[2]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[3]  wr hash (counters skipped_total and abandoned_total; the cursors reap_from and
--          reap_skip_from; resumed_at, the outage credit's start)
-- KEYS[4]  skip (zset: skipped places, the layout of q)
--          On a line shard of a spread line (waitroom/src/line/reap.rs) the keys are the
--          shard's q, its ladm (the copy of adm; its pending entries, below 0, are not
--          deadlines and are left alone), its lmeta (the cursors and counters are the shard's;
--          the leader copies resumed_at there first and adds the counts to the sale's wr)
--          and its skip.
-- KEYS[5]  wt (hash: the report's entries, user -> ...; see report_sampled in lib/prelude.lua),
--          on a sale's own line: the entries of the places removed here go with them
--          (hdel_users in lib/prelude.lua). A line shard passes its lwt here (hash:
--          the shard's sampled buyers not yet shown an ETA) and no KEYS[6]: its places' wt
--          entries are on the sale's slot, and wr_join.lua removes a stale one there.
-- KEYS[6]  wtp (hash: sampled buyers not yet shown an ETA, eta_waits in lib/prelude.lua), on
--          a sale's own line: the entries of the places skipped or removed here go
-- ARGV[1]  abandon_after in ms: a user silent for longer is skipped
-- ARGV[2]  batch size (1..5000)
-- ARGV[3]  the return grace in ms (>= abandon_after): a place silent for longer is lost
--
-- Returns  {expired, skipped, abandoned, queue_length, skipped_length, wrapped}
--   expired    lapsed admissions removed
--   skipped    silent waiters moved from q to skip
--   abandoned  places removed, silent past the grace (from q or skip)
--   queue_length, skipped_length  ZCARD of q and of skip after the call
--   wrapped    1 when both walks reached their tail in this call (the next call starts both
--              at the head again)

local now, now_s = clock()

local abandon_ms = num(ARGV[1])
-- unpack() below puts every member on Lua's C stack, which holds about 8000 values.
local batch = math.min(5000, math.max(1, math.floor(num(ARGV[2]))))
local grace_ms = num(ARGV[3])

-- From 0: deadlines are epoch ms, and a line shard's pending ladm entries are negative.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '0', fmt(now), 'LIMIT', 0, batch)
if #expired > 0 then
  redis.call('ZREM', KEYS[2], unpack(expired))
end
if now - num(redis.call('HGET', KEYS[3], 'resumed_at')) <= abandon_ms then
  return {#expired, 0, 0, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[4]), 1}
end

-- One walk of up to `batch` entries of `key` from the cursor in wr field `field`; calls
-- judge(score) for each and returns the rows and whether the walk reached the tail.
local function walk(key, field, judge)
  local from = num(redis.call('HGET', KEYS[3], field))
  local rows = redis.call('ZRANGEBYSCORE', key, fmt(from * ORDER), '+inf',
    'WITHSCORES', 'LIMIT', 0, batch)
  local last = from
  for i = 1, #rows, 2 do
    last = math.floor(tonumber(rows[i + 1]) / ORDER)
    judge(rows[i], rows[i + 1])
  end
  if #rows < 2 * batch then
    redis.call('HDEL', KEYS[3], field)
    return true
  end
  redis.call('HSET', KEYS[3], field, fmt(last + 1))
  return false
end

-- 2. The line: silent past abandon_after -> skip; past the grace as well -> gone.
local to_skip, gone = {}, {}
local line_wrapped = walk(KEYS[1], 'reap_from', function(user, score)
  local s = tonumber(score)
  if silent(s, now_s, grace_ms) then
    gone[#gone + 1] = user
  elseif silent(s, now_s, abandon_ms) then
    to_skip[#to_skip + 1] = score
    to_skip[#to_skip + 1] = user
  end
end)
local skipped = #to_skip / 2
if skipped > 0 then
  local members = {}
  for i = 2, #to_skip, 2 do
    members[#members + 1] = to_skip[i]
  end
  zrem_all(KEYS[1], members)
  zadd_pairs(KEYS[4], to_skip)
  if KEYS[6] then
    -- A skipped place waits for a first ETA no longer (eta_waits in lib/prelude.lua).
    hdel_users(KEYS[6], members)
  end
  redis.call('HINCRBY', KEYS[3], 'skipped_total', skipped)
end
if #gone > 0 then
  zrem_all(KEYS[1], gone)
  if KEYS[5] then
    hdel_users(KEYS[5], gone, KEYS[6])
  end
end
local abandoned = #gone

-- 3. The skipped places: past the grace -> gone.
local lost = {}
local skip_wrapped = walk(KEYS[4], 'reap_skip_from', function(user, score)
  if silent(tonumber(score), now_s, grace_ms) then
    lost[#lost + 1] = user
  end
end)
if #lost > 0 then
  zrem_all(KEYS[4], lost)
  if KEYS[5] then
    hdel_users(KEYS[5], lost, KEYS[6])
  end
  abandoned = abandoned + #lost
end
if abandoned > 0 then
  redis.call('HINCRBY', KEYS[3], 'abandoned_total', abandoned)
end

local wrapped = (line_wrapped and skip_wrapped) and 1 or 0
return {#expired, skipped, abandoned, redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[4]), wrapped}
