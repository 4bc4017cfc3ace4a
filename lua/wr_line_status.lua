-- wr_line_status.lua: wr_status.lua for a line spread over shards (issue #22 §2; README "A line
-- that outgrows one Redis: the design", "A poll touches only its line shard"). Every key is the
-- buyers' own line shard's: the sale's state, settings, notice and ETA inputs come from what
-- the admitter's leader last published to the shard's lmeta (line::tick::run, every tick), so
-- a poll never reaches the sale's slot and hears a change at most one tick late. The reply has
-- wr_status.lua's shape, so the edge reads both alike.
--
-- What differs from wr_status.lua, and why:
--   state     from lmeta.state as of the last tick, with the clock's own transitions judged
--             here: closes_at passed -> closed, opens_at passed -> no longer scheduled.
--   admitted  from ladm, the shard's copy of adm (settled by the tick, step 6). A copy past
--             its deadline answers none and is left to the reaper (wr_reap.lua drops lapsed
--             copies from 0 up), as the sale's adm is the truth a join reads.
--   pending   a ladm entry below 0 is a place a tick took from q and has not settled: it
--             answers waiting, at 1 + the pending places of this shard ahead of it (the place
--             is at the head of the whole line: only the taken places stand before it). It is
--             never removed here: that would lose the place.
--   counters  revisit's returned_total and abandoned_total go to lmeta (the shard's own);
--             the leader folds them into the sale's wr (wr_line_fold.lua).
--   position  the own shard's rank + the other shards' places below the score, from the
--             published curves (line_ahead in lib/prelude.lua): exact at the head of the
--             line, estimated far back; for a public place that arrived since the last tick,
--             plus the other shards' arrivals since then with a lower number (line_since).
--             The other shards' count is the edge's to make where it can (a lookup): the
--             edge keeps the shard's `others` curve by the `at` it was published with, sends
--             that `at`, and gets the curve back only when lmeta holds another one; a waiting
--             answer then carries the place's score, and the edge adds
--             line::ahead_in_others(curve, score), the same arithmetic as curve_at (so the
--             same position to the place). The search was a quarter of a waiting poll's
--             script, in the Redis a line binds on first (BENCHMARKS.md "line-spread"); the
--             edge scales out. Counted here instead, as before: for a sampled buyer who
--             waits for a first ETA (in lwt: the ETA noted needs the position), and with
--             curves of a leader of two releases back (no `others`).
--   queue_length  the whole line's as of the last tick (lmeta.qlen), plus a place this poll
--             brought back.
--   report    the first ETA shown to a buyer sampled for the report is noted on the shard
--             (note_line_eta in lib/prelude.lua: lwt -> lwte), and the leader carries it
--             into the sale's wt with its next tick, before that tick admits anyone.
--
-- KEYS[1]  q of the line shard (zset: user -> score, wr_join.lua's layout)
-- KEYS[2]  skip of the line shard (zset: skipped places)
-- KEYS[3]  ladm of the line shard (zset: user -> admission deadline, epoch ms; below 0:
--          -(queue score) of a place taken and not yet settled)
-- KEYS[4]  lmeta of the line shard (hash: state, opens_at, closes_at, paused, rate, notice,
--          groups, free, limited, qlen, at (when the curves were read, epoch ms: the
--          curves' version), others (or all and own: line_curves in lib/prelude.lua), seq,
--          as line::positions::publish writes them; counters returned_total and
--          abandoned_total)
-- KEYS[5]  lwt of the line shard (hash: sampled buyers not yet shown an ETA, user -> '';
--          eta_waits in lib/prelude.lua: counted once a batch, a lost place's entry goes)
-- KEYS[6]  lwte of the line shard (hash: user -> "<first ETA ms>:<shown at ms>", for the leader)
-- ARGV[1]  the return grace in ms: a place silent for longer is lost
-- ARGV[2]  the `at` of the `others` curve the edge holds for this shard ('' for none)
-- ARGV[3..] user ids, 16 raw bytes each (at least one), all of this shard
--
-- Returns  {opens_at_ms, now_ms, paused, admit_per_second, free, limited_rate_milli, notice,
--          groups, at, sent, curve, then six integers per user: state, position,
--          deadline_ms, queue_length, group_rank, lookup}; or {'not_found'} when the sale is
--          not armed or nothing was published to this shard yet (the leader's first tick of
--          an armed sale publishes, within one tick). The first eight and the first five of
--          each user's are wr_status.lua's.
--   at        lmeta's `at`, the version of the curve the lookups are made on ('' for none)
--   sent      1 when curve is lmeta's `others` (the edge's `at` was another), else 0
--   curve     the packed curve when sent, else ''
--   lookup    a waiting place's score when the edge is to add the other shards' places
--             below it to position (curve at `at`); -1 when position is whole already

local now, now_s = clock()

local m = redis.call('HMGET', KEYS[4], 'state', 'opens_at', 'closes_at', 'paused', 'rate',
  'notice', 'groups', 'free', 'limited', 'qlen', 'at', 'seq')
if not m[1] or m[1] == 'not_found' then
  return {'not_found'}
end
local opens_at, closes_at = num(m[2]), num(m[3])
local paused = flag(m[4]) and 1 or 0
local state = m[1]
if state == 'closed' or (closes_at > 0 and now >= closes_at) then
  state = 'closed'
elseif state ~= 'sold_out' then
  state = (now < opens_at) and 'scheduled' or 'open'
end
local rate, free, limited = num(m[5]), num(m[8]), tonumber(m[9]) or -1
local qlen = math.max(0, num(m[10]))
local seq, public = num(m[12]), public_rank(m[7])
-- The order key (floor(score / ORDER) % GROUP_BAND) past which a place arrived after seq + 1
-- (arrival_number: PRE_KEYS + n).
local since_past = PRE_KEYS + seq + 1
local grace_ms = num(ARGV[1])
local unshown = eta_waits(KEYS[5])
local noting = paused == 0 and rate > 0

-- The curves, for the edge (at, sent, curve) and for the polls counted here (others, all,
-- own: read once, when the first such poll needs them).
local at, sent, curve = m[11] or '', 0, ''
local edge_counts = at ~= ''
local others, all, own, curves_read
local function read_curves()
  if not curves_read then
    curves_read = true
    others, all, own = line_curves(KEYS[4], redis.call('HGET', KEYS[4], 'others'))
  end
end
if edge_counts and at ~= ARGV[2] then
  read_curves()
  if others then
    sent, curve = 1, others
  else
    edge_counts = false
  end
end
local function ahead(score)
  read_curves()
  return line_ahead(score, others, all, own)
end

local out = {opens_at, now, paused, rate, free, limited, m[6] or '', m[7] or '', at, sent, curve}
local nout = #out

local function reply(st, position, deadline, rank, lookup)
  nout = status_push(out, nout, st, position, deadline, qlen, rank)
  nout = nout + 1
  out[nout] = lookup or -1
end

local function lost()
  if state == 'sold_out' then
    return reply('sold_out', 0, 0)
  end
  return reply('none', 0, 0)
end

-- The answer for a user without a place in q or skip, from ladm (`none` without an entry).
local function admission(user)
  local held = redis.call('ZSCORE', KEYS[3], user)
  if not held then
    return lost()
  end
  held = tonumber(held)
  if state == 'sold_out' then
    return reply('sold_out', 0, 0)
  end
  if held < 0 then
    local ahead = redis.call('ZCOUNT', KEYS[3], '(' .. fmt(held), '(0')
    return reply('waiting', 1 + ahead, 0, group_rank(-held))
  end
  if held <= now then
    return lost()
  end
  return reply('admitted', 0, held)
end

-- Every user's place read at once, the refreshed stamps written at the end (poll_places in
-- lib/prelude.lua).
local places = poll_places(KEYS[1], 3)

local function one(i)
  local user = ARGV[i]
  if state == 'closed' then
    return reply('closed', 0, 0)
  end
  -- The place first, then ladm, as wr_status.lua does (a waiting buyer's poll reads no ladm): a
  -- user never holds both, since wr_line_take.lua moves a place from q to ladm and
  -- wr_line_place.lua places no user who has an entry in ladm (a lapsed copy it removes
  -- first).
  local standing, moved, score = poll_revisit(places, i, KEYS[2], KEYS[4], now_s, grace_ms)
  if not standing then
    return admission(user)
  end
  if moved ~= 0 then
    qlen = math.max(0, qlen + moved)
  end
  if standing ~= 'live' then
    -- The wait for a first ETA goes with the place (its wt entry on the sale's slot goes at
    -- the buyer's next join, wr_join.lua).
    eta_wait_take(unshown, user)
    return lost()
  end
  if state == 'sold_out' then
    return reply('sold_out', 0, 0)
  end
  if state == 'scheduled' then
    return reply('scheduled', 0, 0, group_rank(score))
  end
  local position = redis.call('ZRANK', KEYS[1], user) + 1
  -- line_since's first test inline (a function call a poll saved): only a place that arrived
  -- after the opening with a number past seq + 1 can have arrivals since the count ahead of it.
  if math.floor(score / ORDER) % GROUP_BAND > since_past then
    position = position + line_since(KEYS[1], score, seq, public)
  end
  -- A sampled buyer waiting for a first ETA (in lwt) gets the position counted here, for the
  -- ETA noted. Asked per buyer, not per batch: a silent pre-open buyer can keep lwt from
  -- emptying for the return grace after the opening, the busiest minutes. No ETA is shown
  -- while paused or without a rate (eta_raw_ms), so nobody is asked then.
  if noting and not eta_waits_none(unshown) and redis.call('HEXISTS', KEYS[5], user) == 1 then
    position = position + ahead(score)
    note_line_eta(unshown, KEYS[6], user, now, eta_raw_ms(position, rate, paused, free, limited))
    return reply('waiting', position, 0, group_rank(score))
  end
  if edge_counts then
    return reply('waiting', position, 0, group_rank(score), score)
  end
  return reply('waiting', position + ahead(score), 0, group_rank(score))
end

for i = 3, #ARGV do
  one(i)
end
poll_places_done(places)
return out
