-- wr_line_place.lua: the last of a join's three calls on a spread line (issue #22 §2; README
-- "A line that outgrows one Redis: the design"; waitroom/src/queue.rs, join_spread): puts the
-- new places wr_join.lua scored on the sale's slot into their line shard's q, one place per
-- user, and says where each stands. Every key is the shard's own.
--
-- A user who has an entry on this shard already (in q or skip, or in ladm: admitted or taken by
-- a tick) keeps it, and this call changes nothing for them: their other tab's join got there
-- first, and the score wr_join.lua handed out is left unused (a gap in the arrival numbers,
-- which costs nothing). The edge then answers them with a poll.
-- Except a lapsed copy in ladm (deadline passed, above 0): wr_join.lua placed the user because
-- the sale's adm holds no live admission for them, and the copy's deadline has passed too, so
-- it is removed here and the user placed. Left for the reaper, it would answer the join and
-- every poll `none` until the next reap (reap_interval_ms), each retry spending a number.
-- A live copy stays: the sale's slot may have admitted this user since it judged the join (a
-- tick between this join's calls, placing their other tab's place), and wr_line_sync.lua
-- removes a copy the order side ended with the next tick.
--
-- Until the admitter's leader first publishes to the shard (its first tick of the sale), the
-- shard's lmeta has no state, and a poll there could not answer. So the first join seeds it
-- with what the sale's slot just said (ARGV[1..10]); the leader's tick overwrites all of it, and
-- a seed never overwrites what a tick wrote. closes_at is not known here and is seeded 0: a
-- poll hears a closing time with the first tick.
--
-- The report: a new place the sale's slot sampled (its wt entry made there) is noted in lwt,
-- and when the sale is open the ETA its join answer shows (from the seed's rate, paused and
-- ETA inputs, as the edge computes it) is noted at once as the first one shown
-- (note_line_eta in lib/prelude.lua); a scheduled place's first ETA is its first poll's.
--
-- KEYS[1]  q of the line shard (zset: user -> score, wr_join.lua's layout)
-- KEYS[2]  skip of the line shard
-- KEYS[3]  ladm of the line shard
-- KEYS[4]  lmeta of the line shard (hash: the published curve `others`, or `all` and `own`:
--          line_curves in lib/prelude.lua; the fields wr_line_status.lua reads, seeded when
--          `state` is absent)
-- KEYS[5]  lwt of the line shard (hash: sampled buyers not yet shown an ETA, user -> '')
-- KEYS[6]  lwte of the line shard (hash: user -> "<first ETA ms>:<shown at ms>")
-- ARGV[1..10]  the seed: state (open | scheduled), opens_at, paused (0/1), rate, notice,
--          groups, free, limited, qlen, seq (wr.line_seq), as wr_join.lua answered them
-- then triples: user id (16 raw bytes), score (an integer below 2^53, as text), sampled (1
--          when wr_join.lua made the place's wt entry, else 0)
--
-- Returns  {new_1, position_1, ..., new_n, position_n}, in the triples' order:
--   new       1 when this call made the place, 0 when the user had an entry here already
--   position  with new 1: the place's rank on the shard + 1, plus the other shards' places
--             below its score from the last published curves (line_position in
--             lib/prelude.lua), plus the arrivals since the last count ahead of it that this
--             shard does not hold (line_since); 0 with new 0
local SEED = 10
if #ARGV < SEED or (#ARGV - SEED) % 3 ~= 0 then
  return redis.error_reply('ERR wr_line_place: ARGV must be the 10 seed values and triples')
end
local now = clock()
local open = ARGV[1] == 'open'
local paused, rate, free, limited = num(ARGV[3]), num(ARGV[4]), num(ARGV[7]), tonumber(ARGV[8]) or -1
local m = redis.call('HMGET', KEYS[4], 'state')
if not m[1] then
  local names = {'state', 'opens_at', 'paused', 'rate', 'notice', 'groups', 'free', 'limited',
    'qlen', 'seq'}
  for i, name in ipairs(names) do
    redis.call('HSETNX', KEYS[4], name, ARGV[i])
  end
  redis.call('HSETNX', KEYS[4], 'closes_at', '0')
end
m = redis.call('HMGET', KEYS[4], 'others', 'seq', 'groups')
local others, all, own = line_curves(KEYS[4], m[1])
local seq, public = num(m[2]), public_rank(m[3])
local out = {}
local unshown = eta_waits(KEYS[5])
for i = SEED + 1, #ARGV, 3 do
  local user, score = ARGV[i], tonumber(ARGV[i + 1])
  if not score then
    return redis.error_reply('ERR wr_line_place: a score is not a number')
  end
  local held = tonumber(redis.call('ZSCORE', KEYS[3], user))
  if held and held > 0 and held <= now then
    redis.call('ZREM', KEYS[3], user)
    held = nil
  end
  if held or redis.call('ZSCORE', KEYS[1], user) or redis.call('ZSCORE', KEYS[2], user) then
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[1], fmt(score), user)
    local position = line_position(KEYS[1], user, score, others, all, own)
      + line_since(KEYS[1], score, seq, public)
    if ARGV[i + 2] == '1' then
      eta_wait_add(unshown, user)
      if open then
        note_line_eta(unshown, KEYS[6], user, now, eta_raw_ms(position, rate, paused, free, limited))
      end
    end
    out[#out + 1] = 1
    out[#out + 1] = position
  end
end
return out
