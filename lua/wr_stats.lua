-- wr_stats.lua: one sale's waiting-room figures for GET /w/{sale}/stats. Read-only.
--
-- The state is sale_state (lib/prelude.lua), the api's sale states by precedence: closed >
-- sold_out > scheduled > paused > open.
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, notice)
-- KEYS[2]  avail
-- KEYS[3]  held
-- KEYS[4]  q (the queue, see wr_join.lua)
-- KEYS[5]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[6]  wr hash (admitted_total, abandoned_total, admit_rate_milli; line_length and
--          line_skipped for a spread line: line_counts in lib/prelude.lua)
-- KEYS[7]  skip (zset: skipped places, see wr_join.lua)
-- ARGV     none
--
-- Returns  {state, queue_length, admitted_total, active, available, held, abandoned_total,
--           now_ms, opens_at_ms, admit_rate_milli, notice, skipped}
--   admit_rate_milli  the admitter's smoothed measured rate x 1000, -1 when none measured yet
--   notice    the operator's notice to the line, '' when none (design/door.md §4)
--   state     scheduled | open | paused | sold_out | closed | not_found
--   queue_length  entries in q, the waiting line (skipped places do not count; a silent user
--             counts until the admitter or the reaper skips it)
--   skipped   skipped places that may still come back (door.md §6)
--   active    admissions whose deadline is still ahead
local now = clock()

local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed', 'notice')
if not c[1] then
  return {'not_found', 0, 0, 0, 0, 0, 0, now, 0, -1, '', 0}
end
local opens_at, closes_at = num(c[1]), num(c[2])
local avail, held = num(redis.call('GET', KEYS[2])), num(redis.call('GET', KEYS[3]))
local state = sale_state(now, opens_at, closes_at, c[3], c[4], avail, held)
local w = redis.call('HMGET', KEYS[6], 'admitted_total', 'abandoned_total', 'admit_rate_milli')
local waiting, skipped = line_counts(KEYS[1], KEYS[4], KEYS[7], KEYS[6])
return {
  state,
  waiting,
  num(w[1]),
  redis.call('ZCOUNT', KEYS[5], '(' .. fmt(now), '+inf'),
  avail,
  held,
  num(w[2]),
  now,
  opens_at,
  tonumber(w[3]) or -1,
  c[5] or '',
  skipped,
}
