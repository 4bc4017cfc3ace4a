-- wr_reap.lua: housekeeping for one sale, in bounded batches (run by the admitter leader).
--
-- 1. Removes up to `batch` admissions whose deadline has passed. Admission counts already
--    ignore them (wr_admit counts deadlines still ahead), so this only returns their memory;
--    the max_active slot was free the moment the deadline passed.
-- 2. Walks up to `batch` queue entries from a cursor (the next order key to look at, kept in
--    the wr hash) and removes users silent for longer than abandon_after (layout and rule: see
--    wr_join.lua). The cursor goes back to the head after the tail, so repeated calls sweep the
--    whole queue; a full pass takes ceil(queue_length / batch) calls. This keeps queue_length
--    and positions honest deep in the line; the head is also cleaned by wr_admit itself.
--
-- KEYS[1]  q (the queue)
-- KEYS[2]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[3]  wr hash (counters; field reap_from: the cursor)
-- ARGV[1]  abandon_after in ms
-- ARGV[2]  batch size (1..5000)
--
-- Returns  {expired, abandoned, queue_length, wrapped}
--   expired    lapsed admissions removed; abandoned: silent waiters removed
--   queue_length  after the call
--   wrapped    1 when this call reached the tail (the next call starts at the head again)

local now, now_s = clock()

local abandon_ms = num(ARGV[1])
-- unpack() below puts every member on Lua's C stack, which holds about 8000 values.
local batch = math.min(5000, math.max(1, math.floor(num(ARGV[2]))))

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', fmt(now), 'LIMIT', 0, batch)
if #expired > 0 then
  redis.call('ZREM', KEYS[2], unpack(expired))
end

local from = num(redis.call('HGET', KEYS[3], 'reap_from'))
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], fmt(from * ORDER), '+inf',
  'WITHSCORES', 'LIMIT', 0, batch)
local gone = {}
local last = from
for i = 1, #rows, 2 do
  local score = tonumber(rows[i + 1])
  last = math.floor(score / ORDER)
  if silent(score, now_s, abandon_ms) then
    gone[#gone + 1] = rows[i]
  end
end
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HINCRBY', KEYS[3], 'abandoned_total', #gone)
end
local wrapped = 0
if #rows < 2 * batch then
  wrapped = 1
  redis.call('HDEL', KEYS[3], 'reap_from')
else
  redis.call('HSET', KEYS[3], 'reap_from', fmt(last + 1))
end
return {#expired, #gone, redis.call('ZCARD', KEYS[1]), wrapped}
