-- lib/prelude.lua: the helpers and rules shared by the scripts, written once.
--
-- Not a script of its own: the Rust loader puts this file in front of every script at compile
-- time (`dropline_core::lua_script!`, in core/src/lua.rs: `concat!(include_str!(this file),
-- "\n", include_str!(the script))`), so the text Redis runs, hashes (EVALSHA) and caches is
-- prelude + script, and the script's own file stays its contract (header: KEYS, ARGV, returns).
-- Redis Cluster is unaffected: every helper touches only the keys the script passes to it.
--
-- Everything here is a `local` (a Redis script may not create globals) and nothing runs at the
-- top: defining these functions (and one alias, struct_unpack) is all the prelude does on a
-- call, no Redis command (TIME is read by clock(), when a script calls it). Every script gets
-- the whole prelude, used or not: the definitions cost about 0.6 us a call (measured with 12
-- closures; 29 now), which is within the run-to-run noise of the hot scripts (reserve.lua
-- about 24 us of Redis time, a 100-user wr_status.lua batch about 200 us); prepending only
-- what each script uses would save about 0.2 us of reserve's.
-- It adds about 6 KB to each body, sent once per node (SCRIPT LOAD or the NOSCRIPT fallback),
-- never per call (EVALSHA). Not a Redis Function library (FUNCTION LOAD, FCALL): that would
-- have to be loaded on every node before the first call, while EVALSHA's NOSCRIPT fallback
-- brings a script back by itself.
--
-- Error replies keep their text; a Lua runtime error's line number (user_script:N) counts the
-- prelude's lines too.

-- Redis TIME as now_ms (epoch ms, integer), now_s (epoch s) and now_f (epoch ms with the
-- microseconds as the fraction). Call it once per script: every rule of a call sees one "now".
local function clock()
  local t = redis.call('TIME')
  local now_s, us = tonumber(t[1]), tonumber(t[2])
  return now_s * 1000 + math.floor(us / 1000), now_s, now_s * 1000 + us / 1000
end

-- A stored number (a hash field, a counter), 0 when missing or not a number.
local function num(v) return tonumber(v) or 0 end

-- An integer (epoch ms, units, scores up to 2^53) as the text Redis stores, never 1e+15.
local function fmt(x) return string.format('%.0f', x) end

-- a * b, exactly, as decimal text, for 0 <= a <= 2^53 - 1 and 0 <= b <= 2^20 (an amount: a
-- price in minor units times a quantity). Lua's numbers are doubles, exact only up to 2^53, so
-- price * qty would round past it (2^53 - 1 times 3 came out one off). Split a at 10^8: each
-- partial product stays below 2^53 and the carry is exact.
local function mul_exact(a, b)
  local lo_base = 100000000
  local hi, lo = math.floor(a / lo_base), a % lo_base
  local lo_prod = lo * b
  local carry, low = math.floor(lo_prod / lo_base), lo_prod % lo_base
  local high = hi * b + carry
  if high == 0 then
    return fmt(low)
  end
  return fmt(high) .. string.format('%08d', low)
end

-- A cfg flag (paused, closed): set when '1' or 'true'.
local function flag(v) return v == '1' or v == 'true' end

-- A stock counter for sale_state: a number as it is, a key read with GET (num'd).
local function counter(v)
  if type(v) == 'string' then
    return num(redis.call('GET', v))
  end
  return v
end

-- The sale's state, the one place of the precedence (first match wins; the api's sale states):
--   closed     cfg.closed set, or closes_at > 0 and now >= closes_at
--   sold_out   avail <= 0 and held <= 0 (nothing left and nothing that can come back)
--   scheduled  now < opens_at
--   paused     cfg.paused set
--   open       otherwise
-- now, opens_at, closes_at: epoch ms numbers; paused, closed: the cfg fields as stored.
-- avail, held: the counters, or their keys (then each is read only when the rule gets to it,
-- so a closed sale reads neither and avail > 0 never reads held); avail nil leaves sold_out out
-- (reserve.lua, which checks stock against the quantity itself).
-- Rust applies the same rule to sale_view.lua's snapshot: dropline_core::sale::derive_state
-- (a test runs both on the same inputs).
local function sale_state(now, opens_at, closes_at, paused, closed, avail, held)
  if flag(closed) or (closes_at > 0 and now >= closes_at) then
    return 'closed'
  end
  if avail ~= nil and counter(avail) <= 0 and counter(held) <= 0 then
    return 'sold_out'
  end
  if now < opens_at then
    return 'scheduled'
  end
  if flag(paused) then
    return 'paused'
  end
  return 'open'
end

-- The waiting-room queue's score: order_key * ORDER + stamp (layout in wr_join.lua). The order
-- key's high part is the buyer's priority group (door.md §2): rank * GROUP_BAND + the key within
-- the group (below PRE_KEYS for a pre-open arrival, PRE_KEYS + n for the n-th later one).
local ORDER = 65536
local PRE_KEYS = 4294967296    -- 2^32
local GROUP_BAND = 8589934592  -- 2^33

-- The rank of the `public` group: the number of priority groups in cfg.groups (comma-joined
-- names, highest first; nil or '' for none).
local function public_rank(groups)
  local n = 0
  for _ in string.gmatch(groups or '', '[^,]+') do
    n = n + 1
  end
  return n
end

-- The group rank of a queue score: 0 for the sale's first group, #groups for `public`.
local function group_rank(score)
  return math.floor(score / ORDER / GROUP_BAND)
end

-- Whether a queue entry with this score was silent for longer than after_ms: its stamp (Redis
-- seconds mod ORDER at the last join or poll) is older. With abandon_after the admitter skips
-- the buyer (door.md §6); with the return grace the place is lost.
local function silent(score, now_s, after_ms)
  return ((now_s - score % ORDER) % ORDER) * 1000 > after_ms
end

-- ZADD key with the flat list {score_1, member_1, score_2, member_2, ...}, and ZREM key with a
-- list of members, in chunks: unpack() puts every value on Lua's C stack (about 8000 slots).
-- zadd_xx_pairs: ZADD XX, which changes only the members still there.
local CHUNK = 1000
local function zadd_pairs(key, flat)
  for i = 1, #flat, 2 * CHUNK do
    redis.call('ZADD', key, unpack(flat, i, math.min(#flat, i + 2 * CHUNK - 1)))
  end
end
local function zadd_xx_pairs(key, flat)
  for i = 1, #flat, 2 * CHUNK do
    redis.call('ZADD', key, 'XX', unpack(flat, i, math.min(#flat, i + 2 * CHUNK - 1)))
  end
end
local function zrem_all(key, members)
  for i = 1, #members, CHUNK do
    redis.call('ZREM', key, unpack(members, i, math.min(#members, i + CHUNK - 1)))
  end
end

-- A queue score with its stamp set to now_s (the order key, the high bits, kept).
local function restamped(score, now_s)
  return score - score % ORDER + now_s % ORDER
end

-- A buyer's join or poll at now_s finds their place (door.md §6, "sleeping tabs keep their
-- place"). q is the line, skip the skipped places (the same member and score, moved there by
-- the admitter or the reaper once silent for longer than abandon_after), wr the room's hash.
--   in q or skip, silent for at most grace_ms: the place is kept and the stamp refreshed; a
--     skipped place goes back into q with its original order key, so where the line has passed
--     it, it stands at the head (position 1, admitted at the next tick, ahead of every later
--     arrival) and otherwise where it was. (Positions are ZRANK in q: with priority groups in
--     the order key's high bits, the head of q is the head of the buyer's group, behind every
--     waiting buyer of a higher group.) Counted in wr.returned_total when it came from skip.
--   silent for longer than grace_ms: the place is lost, removed, counted in wr.abandoned_total.
-- Returns 'live' | 'lost' | nil (no place), the change of ZCARD q (-1, 0 or 1), and the place's
-- score when live.
-- A poll batch passes `known`: the user's score in q as the batch left it, false when not in
-- q (nil: read it here). See poll_revisit, which keeps a place itself.
local function revisit(q, skip, wr, user, now_s, grace_ms, known)
  local from = q
  local score = known
  if score == nil then
    score = redis.call('ZSCORE', q, user)
  end
  if not score then
    score = redis.call('ZSCORE', skip, user)
    if not score then
      return nil, 0
    end
    from = skip
  end
  score = tonumber(score)
  if silent(score, now_s, grace_ms) then
    redis.call('ZREM', from, user)
    redis.call('HINCRBY', wr, 'abandoned_total', 1)
    return 'lost', (from == q) and -1 or 0
  end
  local fresh = restamped(score, now_s)
  if from == skip then
    redis.call('ZREM', skip, user)
    redis.call('ZADD', q, fmt(fresh), user)
    redis.call('HINCRBY', wr, 'returned_total', 1)
    return 'live', 1, fresh
  end
  if fresh ~= score then
    redis.call('ZADD', q, 'XX', fmt(fresh), user)
  end
  return 'live', 0, fresh
end

-- A poll batch's places (wr_status.lua, wr_line_status.lua): every user's score in q is read
-- with one ZMSCORE, and the refreshed stamps are written with one ZADD XX after the batch
-- (poll_places_done). A ZSCORE and a ZADD a poll were two of a waiting poll's three calls from
-- Lua, each costing Redis more than the command itself (BENCHMARKS.md "poll-places"). Each
-- user is still answered as if alone and in order: a revisit reads the score as the batch left
-- it (poll_revisit: a user twice in a batch sees what the first poll did), and a place that moves
-- (brought back from skip, lost) is written at once, so the ranks after it count it. A restamp
-- moves no place (order keys are unique and the stamp is the score's low bits), so writing it
-- later changes no rank. (A spread line's pre-open keys are not probed for collisions,
-- wr_join.lua: two places of one shard with one key stand by stamp, and may then swap one
-- batch later than they did.) users: ARGV from index `first` on.
local function poll_places(q, first)
  local scores = {}
  if #ARGV >= first then
    scores = redis.call('ZMSCORE', q, unpack(ARGV, first))
  end
  return {q = q, first = first, restamps = {}, n = 0, seen = {}, scores = scores}
end

-- revisit (above) of the user at ARGV[i] in a poll batch b (poll_places), and what it returns.
-- The place is read as the batch left it (a user twice in a batch sees what the first poll
-- did): a place that moved is recorded for the user's next poll in the batch. A place in q kept
-- (nearly every poll) is answered here: its refreshed stamp goes to the batch's restamps, a
-- number (Redis writes a script's number argument with 17 digits, exact for a score, so no
-- string is made for it here); every other case is revisit's.
local function poll_revisit(b, i, skip, wr, now_s, grace_ms)
  local user = ARGV[i]
  local score = b.seen[user]
  if score == nil then
    score = b.scores[i - b.first + 1]
    score = score and tonumber(score)
  end
  if score and not silent(score, now_s, grace_ms) then
    local fresh = restamped(score, now_s)
    if fresh ~= score then
      local n = b.n
      b.restamps[n + 1] = fresh
      b.restamps[n + 2] = user
      b.n = n + 2
    end
    -- Nothing to record for the user's next poll in the batch: that one reads this score,
    -- which differs only in its stamp, and so answers alike (a second restamp, the same).
    return 'live', 0, fresh
  end
  local standing, moved, fresh = revisit(b.q, skip, wr, user, now_s, grace_ms, score)
  b.seen[user] = standing == 'live' and fresh
  return standing, moved, fresh
end

local function poll_places_done(b)
  zadd_xx_pairs(b.q, b.restamps)
end

-- The start of every arrow of an existing order (begin_payment, confirm, release): reads the
-- order hash `key` (layout in reserve.lua). When the arrow cannot start, answers the script's
-- reply {result, state, qty, deadline_ms, now_ms}: not_found (no such order; state '', numbers
-- 0), or noop with the current state when it is not `from` (nothing changed). Otherwise
-- answers nil, the fields (o, for outbox_order), qty and deadline.
local function order_at(key, from, now)
  local o = redis.call('HMGET', key, 'state', 'qty', 'deadline', 'user', 'amount', 'currency', 'created', 'idem')
  if not o[1] then
    return {'not_found', '', 0, 0, now}
  end
  local qty, deadline = num(o[2]), num(o[3])
  if o[1] ~= from then
    return {'noop', o[1], qty, deadline, now}
  end
  return nil, o, qty, deadline
end

-- The outbox: every script that moves an order appends the order's new row to the sale's
-- `events` stream in the same atomic step (entry fields: see reserve.lua). Numbers as text.
local function outbox(stream, order, state, user, qty, amount, currency, deadline, created, at, idem)
  redis.call('XADD', stream, '*', 'order', order, 'state', state, 'user', user,
    'qty', qty, 'amount', amount, 'currency', currency, 'deadline', deadline,
    'created', created, 'at', at, 'idem', idem)
end

-- outbox for an order read by order_at (o), now in `state` with `deadline`, moved at `now`.
local function outbox_order(stream, order, o, state, deadline, now)
  outbox(stream, order, state, o[4], o[2], o[5], o[6], fmt(deadline), o[7], fmt(now), o[8])
end

-- A change of `user`'s admission in the sale's adm (extended or ended by an order), noted in
-- `admch` for a sale whose line is spread over shards: the admitter's leader carries it into
-- the shard's copy (wr_line_budget.lua takes the notes, wr_line_sync.lua applies them). admch
-- exists only for such a sale (each of its ticks keeps the mark '' in it), so a sale on one
-- shard pays one EXISTS and keeps nothing.
local function adm_changed(admch, user)
  if redis.call('EXISTS', admch) == 1 then
    redis.call('SADD', admch, user)
  end
end

-- The stock rule of admission (wr_admit.lua): how many more buyers the stock lets in, when each
-- of the `active` admitted buyers may still claim up to `need` units of avail + held. A buyer is
-- let in while the units the buyers before them could claim leave at least one over:
--   units - (active + k - 1) * need >= 1   for the k-th newcomer,
-- so k <= ceil(units / need) - active. Rounding down instead (every newcomer promised a whole
-- `need`) stalls the line for good once fewer than `need` units are left: with a limit of 2 and
-- one unit over, nobody would ever be let in to buy it. The last buyer let in may find fewer
-- units than the limit (reserve.lua answers sold_out with what is left, and they can buy that).
-- May be negative (more buyers in than the stock can serve, e.g. after a stock cut).
local function stock_room(avail, held, need, active)
  local units = math.max(0, avail) + math.max(0, held)
  return math.floor((units + need - 1) / need) - active
end

-- What the ETA needs beyond the rate (door.md §3), read once per call:
--   free     buyers the admitter could admit now before max_active or the stock rule binds
--            (the same rules as wr_admit.lua, stock_room with need = cfg.per_user_limit): >= 0
--   limited  the admission rate x 1000 measured over the recent ticks that max_active or stock
--            limited (wr field limited_rate_milli, written by the admitter), -1 when unknown
-- cfg, avail, held, adm, wr: the sale's keys; now: epoch ms. avail and held may be their
-- values already read (counter), cfg the pair {max_active, per_user_limit} already read.
local function eta_inputs(cfg, avail, held, adm, wr, now)
  local c = cfg
  if type(cfg) == 'string' then
    c = redis.call('HMGET', cfg, 'max_active', 'per_user_limit')
  end
  local active = redis.call('ZCOUNT', adm, '(' .. fmt(now), '+inf')
  local need = math.max(1, num(c[2]))
  local free = stock_room(counter(avail), counter(held), need, active)
  local max_active = num(c[1])
  if max_active > 0 and max_active - active < free then
    free = max_active - active
  end
  local limited = tonumber(redis.call('HGET', wr, 'limited_rate_milli')) or -1
  return math.max(0, free), limited
end

-- The post-sale report's recording (issue #24; README "The post-sale report"). Four keys of
-- the sale: rep (hash: totals, histograms, sold_out_at), rps (hash: the per-second series,
-- field "<kind>:<second since opens_at>", kind a arrivals, m admissions, l queue length),
-- wt (hash: user -> "<join ms>" or "<join ms>:<first ETA ms>:<shown at ms>", a sampled buyer's
-- entry for time in line and ETA accuracy; removed at admission and leave, the rest after the
-- sale) and wtc (zset: arrival checkpoints, the join times of the buyers without an entry).
-- Each write is one command or two inside a script the request already runs: no round trip.
--
-- Memory. An entry for every waiting buyer cost about 80 bytes a buyer, two thirds of what
-- the place itself costs (BENCHMARKS.md "report-memory"). So wt holds a sample: a new place
-- gets an entry when its order key is a multiple of 1 + floor(line length / REPORT_SAMPLE),
-- a stride fixed at the join (the first ETA noted later is then truly the first one shown).
-- Every buyer is sampled while the line is under REPORT_SAMPLE; a line that grows steadily
-- to N places holds about REPORT_SAMPLE * ln(N / REPORT_SAMPLE) + REPORT_SAMPLE entries
-- (200,000: ~40,000; a million: ~56,000). Pre-open keys are random and later ones follow
-- arrival, so either way the sample is spread evenly over the line. The ETA accuracy is the
-- sample's; the time in line counts every admitted buyer: a buyer without an entry who
-- joined after the opening has the join time of its arrival number n read from wtc, which
-- keeps the first arrival of every CHECKPOINT_MS slot (member: its time in epoch ms, score:
-- its n); the arrivals up to the next checkpoint fell in that slot, so the estimate (spread
-- evenly over the slot's arrivals) is within CHECKPOINT_MS of the truth. wtc grows with time,
-- not with the crowd: at most one entry per slot with an arrival (36,000 for an hour of
-- non-stop arrivals).
local REPORT_SAMPLE = 10000
local CHECKPOINT_MS = 100

-- A wt entry belongs to one place: the place a buyer had when it was made. When that place is
-- lost (silent past the return grace: a poll's or a join's revisit, the reaper), the entry
-- goes with it. Otherwise a buyer who joins again and is not sampled this time would keep the
-- lost place's entry, and their admission would count their time in line from the lost
-- place's join and judge the lost place's ETA. Losses are rare and already write, so this
-- costs the common path nothing. A spread line's places are lost on its shards, which cannot
-- reach wt on the sale's slot: there wr_join.lua removes the entry of a new place it does
-- not sample instead. The place's wait for a first ETA (eta_waits, below) goes with it too.
-- hdel_users(wt, users, wtp) does that for lost places; it is also how a place that is taken
-- or skipped leaves wtp (or a shard's lwt) alone: hdel_users(wtp, users).
-- Removes `users` from the hash `key`, and from `also` when given, CHUNK at a time.
local function hdel_users(key, users, also)
  for i = 1, #users, CHUNK do
    redis.call('HDEL', key, unpack(users, i, math.min(#users, i + CHUNK - 1)))
    if also then
      redis.call('HDEL', also, unpack(users, i, math.min(#users, i + CHUNK - 1)))
    end
  end
end

-- Whether a new place with order key `key` in a line of `qlen` places gets a wt entry.
local function report_sampled(key, qlen)
  return key % (1 + math.floor(qlen / REPORT_SAMPLE)) == 0
end

-- The arrival number n of a place that came after the opening (PRE_KEYS + n within its group),
-- nil for a pre-open place (its time in line starts at opens_at whatever its join time).
local function arrival_number(score)
  local k = math.floor(score / ORDER) % GROUP_BAND
  if k < PRE_KEYS then
    return nil
  end
  return k - PRE_KEYS
end

-- Records arrival n at now in wtc when it is the first of its CHECKPOINT_MS slot.
local function report_checkpoint(wtc, n, now)
  local last = redis.call('ZRANGE', wtc, -1, -1)[1]
  if not last or math.floor(tonumber(last) / CHECKPOINT_MS) ~= math.floor(now / CHECKPOINT_MS) then
    redis.call('ZADD', wtc, n, fmt(now))
  end
end

-- The join time (epoch ms) of arrival n from wtc: the slot's first arrival time, plus the
-- share of the slot that n's rank among the slot's arrivals gives (the slot ends at the next
-- checkpoint, or at the slot's end, whichever is first). nil when wtc knows nothing before n
-- (its keys were lost: the buyer is left out of the time in line rather than guessed).
local function checkpoint_join(wtc, n, now)
  local at = redis.call('ZREVRANGEBYSCORE', wtc, n, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if not at[1] then
    return nil
  end
  local t, first = tonumber(at[1]), tonumber(at[2])
  local slot_end = (math.floor(t / CHECKPOINT_MS) + 1) * CHECKPOINT_MS
  local nxt = redis.call('ZRANGEBYSCORE', wtc, '(' .. fmt(n), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local last_n, ends = n + 1, math.min(slot_end, now)
  if nxt[1] then
    last_n, ends = tonumber(nxt[2]), math.min(slot_end, tonumber(nxt[1]))
  end
  return t + (n - first) * math.max(0, ends - t) / math.max(1, last_n - first)
end

-- Seconds of the series kept after opens_at: a longer sale stops adding series fields (its
-- totals and histograms still count), so rps holds at most 3 x 21,600 fields.
local REPORT_SECONDS = 21600

-- The series field of kind at now_s, nil past REPORT_SECONDS (or before opening).
local function report_field(kind, now_s, opens_at)
  local t = now_s - math.floor(opens_at / 1000)
  if t < 0 or t >= REPORT_SECONDS then
    return nil
  end
  return kind .. ':' .. t
end

-- The histogram bucket of a duration in ms: buckets grow 5 % each (bucket b holds
-- [1.05^b, 1.05^(b+1)) ms; b = 0 also holds everything under 1 ms), so a percentile read from
-- the bucket's geometric middle is within 2.5 % of the true value. A day is bucket 377.
local function report_bucket(ms)
  if ms < 1 then
    return 0
  end
  return math.floor(math.log(ms) / math.log(1.05))
end

-- The ETA in ms without the admission tick (door.md §3, the formula of the edge's `eta`, which
-- adds the tick; wr_admit adds it back): nil when none is shown (paused, no rate, M unknown).
local function eta_raw_ms(position, rate, paused, free, limited)
  if position <= 0 or paused == 1 or rate <= 0 then
    return nil
  end
  if position <= free then
    return position * 1000 / rate
  end
  if limited <= 0 then
    return nil
  end
  return free * 1000 / rate + (position - free) * 1000000 / limited
end

-- The buyers sampled for the report who have not been shown an ETA yet: a hash user -> '',
-- wtp on a sale's own line (a sampled place made when no ETA could be shown: before the
-- opening, paused, M unknown: eta_raw_ms), lwt on a line shard (every sampled place until its
-- first ETA). A place leaves it at its first ETA, and goes from it when admitted, left or
-- lost, so it empties once the sampled buyers who joined without an ETA have polled with one.
-- On a sale's own line a skipped place leaves it too (a silent buyer would otherwise hold it
-- non-empty for the whole return grace), and a place brought back goes back in when its wt
-- entry has no ETA yet (eta_wait_back). A line shard keeps lwt across a skip: wt is not on
-- its slot. A batch counts it once (HLEN) and keeps the count: while it is empty, a waiting
-- poll makes no call for the report at all (before, every poll asked wt whether this buyer
-- still waited for a first ETA). eta_waits(key) makes the batch's handle; nil key: nobody is
-- tracked, nobody waits.
local function eta_waits(key)
  return {key = key}
end

-- Whether nobody in w waits for a first ETA (w's count, read once a batch).
local function eta_waits_none(w)
  if not w.key then
    return true
  end
  if not w.n then
    w.n = redis.call('HLEN', w.key)
  end
  return w.n == 0
end

-- Takes user out of w: true when the user was waiting for a first ETA.
local function eta_wait_take(w, user)
  if eta_waits_none(w) or redis.call('HDEL', w.key, user) == 0 then
    return false
  end
  w.n = w.n - 1
  return true
end

-- Puts user in w (a sampled place that has not been shown an ETA), keeping the batch's count.
local function eta_wait_add(w, user)
  if redis.call('HSET', w.key, user, '') == 1 and w.n then
    w.n = w.n + 1
  end
end

-- A skipped place brought back (on a sale's own line): back in w when its wt entry has no ETA.
local function eta_wait_back(wt, w, user)
  local v = redis.call('HGET', wt, user)
  if v and not string.find(v, ':', 1, true) then
    eta_wait_add(w, user)
  end
end

-- Notes the first ETA a waiting buyer is shown, once (the entry keeps the first one): only a
-- buyer in w (eta_waits above) has an entry without one.
local function note_eta(wt, w, user, now, eta)
  if not eta or not eta_wait_take(w, user) then
    return
  end
  local v = redis.call('HGET', wt, user)
  if v and not string.find(v, ':', 1, true) then
    redis.call('HSET', wt, user, v .. ':' .. fmt(eta) .. ':' .. fmt(now))
  end
end

-- note_eta on a line shard (a spread line's poll or join, issue #22 §2): a buyer sampled for the
-- report waits in lwt (user -> '', put there by wr_line_place.lua when the sale's slot made
-- their wt entry) until the first ETA they are shown, which then moves to lwte as
-- "<eta>:<now>"; the admitter's leader carries lwte into the sale's wt each tick
-- (wr_line_fold.lua, wr_line_note.lua), before the tick's admissions read it. w: eta_waits(lwt).
local function note_line_eta(w, lwte, user, now, eta)
  if eta and eta_wait_take(w, user) then
    redis.call('HSET', lwte, user, fmt(eta) .. ':' .. fmt(now))
  end
end

-- The outage credit (wr_admit.lua's header, door.md §5): stamps wr.tick_at with now, and
-- wr.resumed_at when the last stamp is older than gap_ms (0: no outage credit, nothing stamped).
-- Returns abandon_ms, or math.huge while abandon_ms has not passed since resumed_at: nobody
-- counts as silent yet.
local function outage_credit(wr, now, gap_ms, abandon_ms)
  if gap_ms > 0 then
    local last = num(redis.call('HGET', wr, 'tick_at'))
    if last > 0 and now - last > gap_ms then
      redis.call('HSET', wr, 'resumed_at', fmt(now))
    end
    redis.call('HSET', wr, 'tick_at', fmt(now))
  end
  if now - num(redis.call('HGET', wr, 'resumed_at')) <= abandon_ms then
    return math.huge
  end
  return abandon_ms
end

-- The first chunk a walk over q's head reads (scan_live); each next one is four times the
-- last. A ZRANGE ... WITHSCORES costs Redis ~0.7 us an entry (each member and score made into a
-- Lua string), so a walk reads what it is likely to look at, and a long run of silent places
-- still takes few calls.
local SCAN_FIRST = 32

-- Looks at q from its head for up to `want` live places, at most scan_limit entries, judging
-- silence as `silent` does (abandon_ms math.huge: nobody is silent). Reads want's worth (at
-- least SCAN_FIRST) and then chunks growing fourfold, and changes nothing: the caller removes
-- what it took. With `past`, once it has `want` it goes on over the silent places now at the
-- head (still within scan_limit) and stops at the first live one, which it does not take:
-- wr_admit.lua skips them so that the positions behind them stay honest. Entries looked at keep
-- their ranks during the scan, so the first `looked` ranks of q are exactly the entries looked
-- at.
-- Returns users (16-byte ids) and scores (numbers) of the live places in queue order, skipped
-- (flat {score, user, ...} of the silent ones, their original score strings), looked, and why
-- it stopped short of `want`: 'scan' (scan_limit reached), 'empty' (q ran out) or nil.
local function scan_live(q, want, scan_limit, now_s, abandon_ms, past)
  local users, scores, skipped, looked, why = {}, {}, {}, 0, nil
  local size = SCAN_FIRST
  local walking = true
  while walking do
    local taking = #users < want
    if not (taking or past) then
      break
    end
    if looked >= scan_limit then
      if taking then
        why = 'scan'
      end
      break
    end
    local n = size
    if taking then
      n = math.max(want - #users, size)
    end
    n = math.min(n, scan_limit - looked)
    size = size * 4
    local head = redis.call('ZRANGE', q, looked, looked + n - 1, 'WITHSCORES')
    if #head == 0 then
      if taking then
        why = 'empty'
      end
      break
    end
    for i = 1, #head, 2 do
      if looked >= scan_limit then
        break
      end
      local user, score = head[i], head[i + 1]
      local quiet = silent(tonumber(score), now_s, abandon_ms)
      if #users >= want and not (past and quiet) then
        walking = false
        break
      end
      looked = looked + 1
      if quiet then
        skipped[#skipped + 1] = score
        skipped[#skipped + 1] = user
      else
        users[#users + 1] = user
        scores[#users] = tonumber(score)
      end
    end
  end
  return users, scores, skipped, looked, why
end

-- An admission tick's budget (wr_admit.lua's header has the rules: the caller's budget, the
-- rate credit and its carry, max_active, the stock rule), computed without charging anything.
-- wr is the room's hash (admit_tat, admit_full); want the caller's budget; rate, tau and carry
-- the rate credit's (tau <= 0: no rate credit); max_active and need (units each admitted buyer
-- may claim) as wr_admit.lua takes them; active the admissions live now.
-- Returns budget, limit ('rate' | 'max_active' | 'stock'), and the rate credit (nil without
-- one) for rate_charge: {from = where its cells start, step = ms a cell, cells = how many it
-- grants now, full = whether admit_full was set}.
local function admit_budget(wr, want, rate, tau, carry, max_active, active, need, avail, held,
                            now_f)
  local budget, limit = math.floor(want), 'rate'
  local credit = nil
  if tau > 0 then
    if rate <= 0 then
      budget = 0
    else
      local s = redis.call('HMGET', wr, 'admit_tat', 'admit_full')
      local full = s[2] == '1'
      -- Credit unused by a late tick is kept for up to `carry` ms when the tick before used
      -- all of its own (the rate binds: the line is busy); otherwise, after a lull, it is lost.
      local floor_at = now_f
      if full and carry > 0 then
        floor_at = now_f - carry
      end
      local from = math.min(math.max(num(s[1]), floor_at), now_f + tau)
      local step = 1000 / rate
      -- The epsilon keeps a credit of exactly n cells from rounding down to n - 1.
      local cells = math.max(0, math.floor((now_f + tau - from) / step + 1e-9))
      credit = {from = from, step = step, cells = cells, full = full}
      if cells < budget then
        budget = cells
      end
    end
  end
  if max_active > 0 and max_active - active < budget then
    budget, limit = max_active - active, 'max_active'
  end
  local by_stock = stock_room(avail, held, need, active)
  if by_stock < budget then
    budget, limit = by_stock, 'stock'
  end
  return budget, limit, credit
end

-- Charges the rate credit (admit_budget's; nil: none) for a tick's n admissions: admit_tat
-- moves on by n cells, and admit_full says whether the tick used every cell it was granted
-- (the next tick's carry). The flag is written only when it changes or cells were charged.
local function rate_charge(wr, credit, n)
  if not credit then
    return
  end
  local full = n >= credit.cells
  if n > 0 then
    redis.call('HSET', wr, 'admit_tat', string.format('%.3f', credit.from + n * credit.step),
      'admit_full', full and '1' or '0')
  elseif full ~= credit.full then
    redis.call('HSET', wr, 'admit_full', full and '1' or '0')
  end
end

-- Records an admission tick's admitted users (in queue order, with their queue scores): their
-- adm entries with the deadline, wr.admitted_total, and the report: admissions this second,
-- each buyer's time in line and ETA error (see wr_admit.lua's KEYS for wt, rep, rps, wtc, wtp;
-- tick the admission tick in ms). The rate credit is charged apart (rate_charge).
local function admit_record(keys, users, scores, deadline, now, now_s, opens_at, tick)
  local flat = {}
  for i, user in ipairs(users) do
    flat[2 * i - 1] = deadline
    flat[2 * i] = user
  end
  zadd_pairs(keys.adm, flat)
  redis.call('HINCRBY', keys.wr, 'admitted_total', #users)
  local field = report_field('m', now_s, opens_at)
  if field then
    redis.call('HINCRBY', keys.rps, field, #users)
  end
  local buckets = {}
  local function count(name, n)
    buckets[name] = (buckets[name] or 0) + n
  end
  for i = 1, #users, CHUNK do
    local part = {unpack(users, i, math.min(#users, i + CHUNK - 1))}
    local entries = redis.call('HMGET', keys.wt, unpack(part))
    -- The sampled buyers admitted before any ETA was shown to them: waiting in wtp.
    local unshown = {}
    for j = 1, #part do
      local e = entries[j]
      local joined, eta, shown
      if e then
        joined, eta, shown = string.match(e, '^(%d+):([%d.]+):(%d+)$')
        if not joined then
          joined = string.match(e, '^(%d+)$')
          unshown[#unshown + 1] = part[j]
        end
      else
        -- Not sampled: a pre-open place waited from the opening; a later one's join time is
        -- its arrival's, from the checkpoints.
        local n = arrival_number(scores[i + j - 1])
        if n then
          joined = checkpoint_join(keys.wtc, n, now)
        else
          joined = opens_at
        end
      end
      if joined then
        count('w:' .. report_bucket(now - math.max(tonumber(joined), opens_at)), 1)
        if eta then
          local promised = math.ceil((tonumber(eta) + tick) / 1000)
          local waited = (now - tonumber(shown)) / 1000
          local err = math.abs(waited - promised)
          count('e:' .. report_bucket(err * 1000), 1)
          if err <= 0.2 * promised + 2 then
            count('e_within', 1)
          end
        end
      end
    end
    redis.call('HDEL', keys.wt, unpack(part))
    if keys.wtp and #unshown > 0 then
      redis.call('HDEL', keys.wtp, unpack(unshown))
    end
  end
  for name, n in pairs(buckets) do
    redis.call('HINCRBY', keys.rep, name, n)
  end
end

-- A spread line's count curve (issue #22 §2, waitroom/src/line/positions.rs), as the leader
-- publishes it to a line shard's lmeta: knots (x, count), each two little-endian doubles
-- (16 bytes), sorted by x. The count of places below score x: linear between knots, 0 before
-- the first, the last count after it (CountCurve::at, the same arithmetic, so the two agree to
-- the bit). Used by wr_line_position.lua and wr_line_status.lua.
--
-- A shard's poll runs this once per buyer, so the bisection avoids calls it need not make:
-- struct.unpack is held in a local (no two table lookups a step), and the midpoint of two
-- integers is taken with % rather than math.floor (no C call a step). About a quarter less a
-- lookup than with both (a 200-knot curve, 21 lookups a call: BENCHMARKS "line-spread").
local struct_unpack = struct.unpack
local function curve_at(packed, x)
  local n = #packed / 16
  if n == 0 then
    return 0
  end
  -- The first knot at or past x (partition_point), by bisection. Knot i starts at byte
  -- 16 * i - 15.
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = lo + hi
    mid = (mid - mid % 2) / 2
    local kx = struct_unpack('<d', packed, 16 * mid - 15)
    if kx < x then
      lo = mid + 1
    else
      hi = mid
    end
  end
  if lo == n + 1 then
    local _, c = struct_unpack('<dd', packed, 16 * n - 15)
    return c
  end
  local x1, c1 = struct_unpack('<dd', packed, 16 * lo - 15)
  if x1 == x then
    return c1
  end
  if lo == 1 then
    return 0
  end
  local x0, c0 = struct_unpack('<dd', packed, 16 * lo - 31)
  return c0 + (c1 - c0) * (x - x0) / (x1 - x0)
end

-- The curves a poll of a line shard counts the other shards with, from its lmeta: `others`
-- (the other shards' curves summed: one search a place), or, when a leader of the release
-- before published them, `all` (every shard's summed) and `own` (this shard's). Returns others,
-- or false, all, own.
local function line_curves(meta, others)
  if others then
    return others
  end
  local m = redis.call('HMGET', meta, 'all', 'own')
  return false, m[1] or '', m[2] or ''
end

-- The other shards' places below `score`, from line_curves' answer (others, or all - own),
-- rounded to a whole place as line::ahead_in_others does.
local function line_ahead(score, others, all, own)
  local ahead
  if others then
    ahead = curve_at(others, score)
  else
    ahead = curve_at(all, score) - curve_at(own, score)
  end
  return math.floor(math.max(ahead, 0) + 0.5)
end

-- The position of `user`, waiting in line shard q with `score`: its rank there + 1, plus the
-- other shards' places below the score (line_ahead).
local function line_position(q, user, score, others, all, own)
  return redis.call('ZRANK', q, user) + 1 + line_ahead(score, others, all, own)
end

-- The line's length and its skipped places, for the read-only figures (wr_stats.lua,
-- wr_control.lua): ZCARD of the sale's q and skip, or, for a line spread over shards
-- (cfg.line_shards > 1, whose places are not on the sale's slot), the counts the admitter's
-- leader last wrote into wr: line_length each tick, line_skipped each open tick (as the
-- tick's head calls left the shards' skip) and each reap.
local function line_counts(cfg, q, skip, wr)
  if num(redis.call('HGET', cfg, 'line_shards')) > 1 then
    local w = redis.call('HMGET', wr, 'line_length', 'line_skipped')
    return num(w[1]), num(w[2])
  end
  return redis.call('ZCARD', q), redis.call('ZCARD', skip)
end

-- The arrivals since the leader's last count that stand ahead of a waiting place of a spread
-- line and that the published curves do not hold yet: for a public place that arrived after
-- the opening with number n past seq (qseq as the last tick read it), the numbers
-- seq + 1 .. n - 1 (every group stands ahead of public), less those this shard q holds (they
-- are in the place's rank already). 0 for any other place: a place counted by the curves, or
-- a higher group's (whose arrivals since the count may be of any group, ahead or behind).
local function line_since(q, score, seq, public)
  local n = arrival_number(score)
  if not n or n <= seq + 1 or group_rank(score) ~= public then
    return 0
  end
  local since = n - 1 - seq
  local key = math.floor(score / ORDER)
  local held = redis.call('ZCOUNT', q, fmt((key - since) * ORDER), '(' .. fmt(key * ORDER))
  return math.max(0, since - held)
end

-- One user's answer in a poll's reply (wr_status.lua, wr_line_status.lua; the edge's
-- status_reply reads it): five integers appended to the reply `out`, the state's code
-- (STATUS_CODE), position, deadline_ms, queue_length and group rank (-1 without a place).
-- Integers, not a text row per user: Lua makes every string it builds (sprintf of each number,
-- then interning), which cost a sixth of the whole script at a batch of 48 (BENCHMARKS.md
-- "status-profile", 2026-12-05), while Redis writes a number into the reply as it is.
local STATUS_CODE = {none = 0, scheduled = 1, waiting = 2, admitted = 3, sold_out = 4, closed = 5}
-- n is #out, kept by the caller (Lua 5.1's #t is a search, paid twice a poll otherwise); returns
-- the new length.
local function status_push(out, n, st, position, deadline, qlen, rank)
  out[n + 1] = STATUS_CODE[st]
  out[n + 2] = position
  out[n + 3] = deadline
  out[n + 4] = qlen
  out[n + 5] = rank or -1
  return n + 5
end
