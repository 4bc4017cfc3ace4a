-- wr_status.lua: where buyers stand, recording the polls that keep their places alive. Takes a
-- batch of users so that the HTTP edge can answer many concurrent polls with one call.
--
-- Queue layout, sale states and the skip rule: see wr_join.lua. A waiting user's poll rewrites
-- the stamp in the low 16 bits of the score (the place does not move). A skipped user (silent
-- for longer than abandon_after, moved to skip) who polls within the return grace of the last
-- poll gets the place back (revisit in lib/prelude.lua): `waiting` at the original place, or at
-- the head when the line has passed it. A user silent for longer than the grace has lost the
-- place: this call removes it and answers `none`, whether or not the reaper got there first,
-- so the rule is the same for all.
-- The users of a batch are handled in order, exactly as if each had made its own call at the
-- same instant (one TIME for the batch).
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, admit_per_second, notice, groups,
--          max_active, per_user_limit)
-- KEYS[2]  avail
-- KEYS[3]  held
-- KEYS[4]  q (the queue)
-- KEYS[5]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[6]  wr hash (field limited_rate_milli, written by the admitter: see eta_inputs;
--          counters abandoned_total and returned_total, see revisit in lib/prelude.lua)
-- KEYS[7]  skip (zset: skipped places, the layout of q)
-- KEYS[8]  wt (hash: user -> the buyer's report entry; a waiting answer notes the first ETA
--          shown, once: note_eta in lib/prelude.lua; a place lost here takes its entry with
--          it, hdel_users in lib/prelude.lua)
-- KEYS[9]  wtp (hash: sampled buyers not yet shown an ETA, user -> ''; eta_waits in
--          lib/prelude.lua: counted once a batch, and while it is empty a poll reads no wt,
--          but for a place it brings back from skip: eta_wait_back)
-- ARGV[1]  the return grace in ms: a place silent for longer is lost
-- ARGV[2..] user ids, 16 raw bytes each (at least one)
--
-- Returns  {opens_at_ms, now_ms, paused, admit_per_second, free, limited_rate_milli, notice,
--           groups, then per user: state, position, deadline_ms, queue_length, group_rank},
--          or {'not_found'} when the sale is not armed. Five integers per user, in ARGV order
--          (status_push in lib/prelude.lua). A batch answers hundreds of polls: with ten RESP
--          values per user, encoding and decoding the reply cost more than the lookups, so
--          what is the same for the whole batch is sent once.
--   state     the code of scheduled | waiting | admitted | sold_out | closed | none
--             (STATUS_CODE in lib/prelude.lua: 1, 2, 3, 4, 5, 0)
--             none: not in the queue and not admitted (never joined, left, abandoned, or the
--             admission lapsed): the client has to join again
--             sold_out and closed go to every user, admitted ones included; a waiting
--             user's poll still keeps the place alive while sold out (stock may come back)
--   position  users ahead in q + 1 when waiting (skipped places do not count), else 0
--   deadline_ms  the admission deadline when admitted (the pass's exp), else 0
--   queue_length  places in q after this user's poll (skipped places do not count; a place
--             this poll brought back does)
--   paused    1 when the sale is paused
--   admit_per_second  the configured rate (cfg)
--   free, limited_rate_milli  for the ETA: see eta_inputs in lib/prelude.lua
--   notice    the operator's notice to the line, '' when none (design/door.md §4); read in this
--             call, so a poll that starts after the notice was stored carries it
--   groups    cfg.groups, the sale's priority groups (comma-joined, highest first)
--   group_rank  the place's group (door.md §2): its index in groups, #groups for public; -1
--             when the user has no place in line (admitted, none, sold_out, closed)

local now, now_s = clock()

-- The sale's settings, stock and held units read once for the state and the ETA's inputs
-- (eta_inputs takes them as read): a call's own reads are what a batch of one or two polls, the
-- common batch at a few thousand polls a second, pays for most.
local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed', 'admit_per_second',
  'notice', 'groups', 'max_active', 'per_user_limit')
if not c[1] then
  return {'not_found'}
end
local opens_at = num(c[1])
local paused = flag(c[3]) and 1 or 0
local avail, held = counter(KEYS[2]), counter(KEYS[3])
-- paused is reported on its own: the line stands as when open (places kept, nobody admitted).
local state = sale_state(now, opens_at, num(c[2]), c[3], c[4], avail, held)

local grace_ms = num(ARGV[1])
local qlen = redis.call('ZCARD', KEYS[4])
local rate = num(c[5])

-- The header (free, limited, notice and groups are set below), then each user's answer.
local out = {opens_at, now, paused, rate, 0, -1, '', ''}
local nout = #out

local function reply(st, position, deadline, rank)
  nout = status_push(out, nout, st, position, deadline, qlen, rank)
end

-- While sold out, everyone hears sold_out, but a polling buyer's place is still kept alive:
-- stock can come back (an expired hold, an operator adding units) and the line then resumes.
local function lost()
  if state == 'sold_out' then
    return reply('sold_out', 0, 0)
  end
  return reply('none', 0, 0)
end

local unshown = eta_waits(KEYS[9])
local free, limited = eta_inputs({c[8], c[9]}, avail, held, KEYS[5], KEYS[6], now)
out[5], out[6], out[7], out[8] = free, limited, c[6] or '', c[7] or ''

-- The answer for a user without a place in q or skip, from adm (`none` without an entry).
local function admission(user)
  local deadline = redis.call('ZSCORE', KEYS[5], user)
  if not deadline then
    return lost()
  end
  deadline = tonumber(deadline)
  if deadline <= now then
    redis.call('ZREM', KEYS[5], user)
    return lost()
  end
  if state == 'sold_out' then
    return reply('sold_out', 0, 0)
  end
  return reply('admitted', 0, deadline)
end

-- Every user's place read at once, the refreshed stamps written at the end (poll_places in
-- lib/prelude.lua).
local places = poll_places(KEYS[4], 2)

local function one(i)
  local user = ARGV[i]
  if state == 'closed' then
    return reply('closed', 0, 0)
  end
  -- The place first, then the admission: nearly every poll is a waiting buyer's, who then costs
  -- no read of adm: with the batch's places read and restamped at once, ZRANK is the only
  -- Redis call a waiting poll makes alone. A user never holds both: wr_admit.lua moves
  -- a place from q to adm, wr_join.lua queues only a user without a live admission and removes
  -- a lapsed one first, and skip holds only places taken from q.
  local standing, moved, score = poll_revisit(places, i, KEYS[7], KEYS[6], now_s, grace_ms)
  if not standing then
    return admission(user)
  end
  qlen = qlen + moved
  if standing ~= 'live' then
    hdel_users(KEYS[8], {user}, KEYS[9])
    return lost()
  end
  if moved == 1 then
    eta_wait_back(KEYS[8], unshown, user)
  end
  if state == 'sold_out' then
    return reply('sold_out', 0, 0)
  end
  if state == 'scheduled' then
    return reply('scheduled', 0, 0, group_rank(score))
  end
  local position = redis.call('ZRANK', KEYS[4], user) + 1
  -- The ETA is worked out only while someone waits for a first one (wtp, counted once a
  -- batch): after the opening's first polls, nobody does, and a poll skips it.
  if not eta_waits_none(unshown) then
    note_eta(KEYS[8], unshown, user, now, eta_raw_ms(position, rate, paused, free, limited))
  end
  return reply('waiting', position, 0, group_rank(score))
end

for i = 2, #ARGV do
  one(i)
end
poll_places_done(places)
return out
