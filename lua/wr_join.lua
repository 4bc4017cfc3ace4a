-- wr_join.lua: put a buyer in a sale's waiting room (one place per user), or say where they are.
--
-- A place is one sorted-set entry, the whole per-buyer state (memory: about 125 bytes a buyer),
-- in q (the queue) or, once skipped, in skip with the same member and score:
--   member  the user id's 16 raw bytes
--   score   order_key * 65536 + stamp   (always < 2^53, so an exact double)
--   order_key rank * 2^33 + k, rank the buyer's priority group (door.md §2: 0 for the first of
--             cfg.groups, #groups for public; at most 8, so order_key < 9 * 2^33 and the score
--             < 2^53), so every waiting buyer of a higher group stands ahead of every one of a
--             lower group and positions (ZRANK) count them first; within a group:
--             k < 2^32 for arrivals before opens_at: a random draw from the caller's CSPRNG, so
--             the group's pre-queue stands in uniformly random order at the opening instant
--             whatever the arrival times; a collision moves to the next free key in a direction
--             the draw also picks, so keys are unique and no tie is broken by arrival.
--             k = 2^32 + n for the n-th arrival after opening (KEYS[6] counts them, all groups
--             together): strict arrival order as Redis runs the calls, always behind every
--             pre-open arrival of the group.
--   stamp     Redis TIME seconds mod 65536 at the user's last join or status call (1 s
--             resolution; the wrap after 18 h is harmless because wr_reap removes places silent
--             past the return grace, at most 12 h, long before).
-- The place never moves when the stamp changes: order keys are unique, so the stamp never
-- decides between two users.
--
-- Sleeping tabs keep their place (door.md §6). A user silent for longer than abandon_after is
-- skipped: the admitter (wr_admit.lua) or the reaper (wr_reap.lua) moves the entry, same
-- member and score, from q to skip (KEYS[8]), so it no longer counts in anyone's position or
-- in queue_length. A join or poll within the return grace of the last one puts it back in q
-- with its original order key (revisit in lib/prelude.lua): at the head when the line has
-- passed it, else where it was. Past the grace the place is lost (removed from q or skip,
-- counted in wr.abandoned_total) and a join starts a new one at the back. A user has one
-- place at most: in q or in skip, never both.
--
-- Sale state, from the cfg hash and the stock counters, by precedence (sale_state in
-- lib/prelude.lua, which also has paused: for the line, a paused sale stands as an open one):
--   closed    cfg.closed = 1, or closes_at > 0 and now >= closes_at
--   sold_out  avail <= 0 and held <= 0 (nothing left and nothing that can come back)
--   scheduled now < opens_at
--
-- A spread line (cfg.line_shards > 1; issue #22 §2, README "A line that outgrows one Redis"):
-- this is the middle one of a join's three calls. The edge first asked the user's line shard
-- (wr_line_status.lua: a place there is answered like a poll, nothing checked); here
-- everything on the sale's slot is judged and spent as for one shard (state, admission, proof
-- of work, codes, presale, queue_full against the leader's last count of the line,
-- wr.line_length, plus the places made since, the order key, the report's arrival), but q is not written: a new place is
-- answered `placed` with its score in `position`, and the edge puts it on the user's shard
-- (wr_line_place.lua); deadline_ms carries wr.line_seq, qseq as the leader's last tick read
-- it, for the shard's lmeta until the first tick publishes there (line_since in
-- lib/prelude.lua). Pre-open keys are not probed for collisions (another shard may hold
-- the key; equal scores are ordered by shard, never by arrival). The first ETA shown is not
-- noted at the join.
--
-- A batch: the edge answers concurrent joins of one sale with one call. The users are handled in
-- order, exactly as if each had made its own call at the same instant (one TIME for the batch);
-- what no join changes (the sale's state, its settings, the ETA's inputs) is read once.
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, admit_per_second, notice,
--          max_active, per_user_limit, pow_difficulty, mode, line_shards)
-- KEYS[2]  avail (units available)
-- KEYS[3]  held (units in HELD + PAYING orders)
-- KEYS[4]  q (the queue, layout above)
-- KEYS[5]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[6]  qseq (counter of arrivals after opening)
-- KEYS[7]  wr hash (field limited_rate_milli, written by the admitter: see eta_inputs;
--          line_length and line_seq, a spread line's length and qseq as the leader last
--          counted them; line_placed, the spread line's new places, and line_placed_at,
--          its value at that count;
--          counters abandoned_total and returned_total, see revisit in lib/prelude.lua)
-- KEYS[8]  skip (zset: skipped places, the layout of q)
-- KEYS[9]  codes (hash: SHA-256 of sale and code, 32 raw bytes -> "<group>:<uses>")
-- KEYS[10] codeuse (hash: code hash -> uses spent; code hash .. user (48 raw bytes) -> 1 for
--          each user who spent one)
-- KEYS[11] wt (hash: user -> a sampled buyer's report entry: join ms, first ETA; see
--          report_sampled and note_eta in lib/prelude.lua; the entry of a place lost past the
--          grace is removed, hdel_users there)
-- KEYS[12] rep (hash: the report's totals: joined, joined_before_open)
-- KEYS[13] rps (hash: the report's per-second series; this script adds arrivals, a:<second>)
-- KEYS[14] wtc (zset: the report's arrival checkpoints, report_checkpoint in lib/prelude.lua)
-- KEYS[15] wtp (hash: sampled buyers not yet shown an ETA, user -> ''; eta_waits in
--          lib/prelude.lua: a sampled place made without an ETA to show waits there)
-- then two keys for each user i of the batch (i from 1):
-- KEYS[14 + 2i]  the challenge's spent marker, pow:<random as 16 hex digits> (touched only
--          with the user's verdict ok)
-- KEYS[15 + 2i]  codefail:<user> (string: the user's wrong codes in this sale, expires an hour
--          after the first)
-- ARGV[1]  maximum queue length (0 = no limit): places in q and skip (both hold memory, and a
--          skipped place may come back)
-- ARGV[2]  the return grace in ms: a place silent for longer is lost
-- ARGV[3]  wrong codes a user may send per hour (waitroom.code_failures_per_user_per_hour)
-- then five values for each user i of the batch (at least one user), from ARGV[4 + 5(i - 1)]:
--   user     user id, 16 raw bytes
--   draw     pre-open draw: an integer in [0, 2^33) from a CSPRNG (used only for a new arrival
--            before opening: low 32 bits the key within the group, bit 32 the probe direction)
--   verdict  the edge's stateless verdict on the request body and proof of work (door.md §1),
--            judged only when the user has no place (a user with a place gets it back, nothing
--            checked or spent):
--              none     no challenge (absent or not needed); bad  the body is malformed (400);
--              invalid  the challenge or nonce failed the edge's checks (MAC, sale, user, bits);
--              ok       genuine and solved: expiry (next value) and single use (the user's
--                       spent marker) judged here.
--            With cfg.pow_difficulty 0 (or unset) proof of work is off and only `bad` is
--            acted on.
--   expiry   with ok: the challenge's expiry, epoch ms (else ignored)
--   code     the access code's hash (32 raw bytes), '' for none (door.md §2)
--
-- Returns  one reply per user, in ARGV order, each:
--          {state, position, deadline_ms, opens_at_ms, now_ms, queue_length, paused, new,
--           admit_per_second, free, limited_rate_milli, notice, groups, group_rank}
--   state     scheduled | waiting | admitted | sold_out | closed | queue_full | not_found
--             (not_found: the sale's cfg hash has no opens_at, it is not armed)
--             | bad_request | pow_required | pow_invalid | pow_expired | pow_spent
--             | code_rate_limited | access_code_invalid | access_code_used | access_code_required
--             | draw (cfg.mode = draw: a draw sale has no line, nothing is written)
--             | placed (a spread line only: a new place to put on the user's line shard;
--             position holds its score, deadline_ms wr.line_seq, and free and
--             limited_rate_milli the ETA's inputs)
--             | no_key (64 probes found no free pre-open key near the draw: never seen, about
--             as likely as 64 collisions in a row; the user may join again)
--             (refusals of a new place, in this order, before queue_full: door.md's order of
--             answers; code_rate_limited carries the ms until the user may try codes again in
--             deadline_ms)
--   position  users ahead in q + 1 when waiting (skipped places do not count), else 0
--   deadline_ms  the admission deadline when admitted, else 0
--   paused    1 when the sale is paused (places are kept, nobody is admitted)
--   new       1 when this call put the user in the queue, 0 when the place already existed;
--             2 in a placed row whose place has a wt entry (sampled for the report): the
--             shard notes its first ETA (wr_line_place.lua)
--   admit_per_second  the configured rate (cfg)
--   free, limited_rate_milli  for the ETA (0 and -1 unless waiting): see eta_inputs in
--             lib/prelude.lua
--   queue_length  places in q after the call (the waiting line; skipped places do not count)
--   notice    the operator's notice to the line, '' when none (design/door.md §4)
--   groups    cfg.groups (comma-joined, highest first); group_rank the place's group, an index
--             into groups, #groups for public, -1 without a place
-- A code: unknown, or of a group the sale no longer has -> access_code_invalid (and one more
-- wrong try in the user's codefail key); its uses spent by other users -> access_code_used; spent by this user
-- before -> accepted, nothing spent again. Without a code before cfg.presale_only_until ->
-- access_code_required. A place made with a code spends one use (HINCRBY) and records the user.
-- Nothing is written for closed, sold_out, not_found or a refusal (beyond clearing a lapsed
-- admission or a place lost past the grace, as any join does, a wrong code counted, and the
-- challenge spent when the code is refused); queue_full writes nothing but that removal either.
-- A join that makes a new place with a challenge spends it: SET <spent marker> NX PXAT expiry (memory:
-- one small key per such join, gone when the challenge expires), set where the challenge is
-- checked, so that one call both checks and spends it. A join ending queue_full (or no_key)
-- spends nothing: it deletes the marker it set.
local now, now_s = clock()

-- The sale's settings, stock and held units read once for the state and the ETA's inputs
-- (eta_inputs takes them as read), as wr_status.lua does.
local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed', 'admit_per_second',
  'notice', 'groups', 'presale_only_until', 'mode', 'pow_difficulty', 'line_shards', 'max_active',
  'per_user_limit')
local users = (#ARGV - 3) / 5
if users < 1 or users ~= math.floor(users) then
  return redis.error_reply('ERR wr_join: ARGV must be 3 values and 5 per user, for at least one user')
end
-- Checked before anything is written: a batch runs whole or not at all.
for i = 1, users do
  local draw = tonumber(ARGV[3 + 5 * (i - 1) + 2])
  if draw == nil or draw < 0 or draw >= 2 * PRE_KEYS or draw ~= math.floor(draw) then
    return redis.error_reply('ERR wr_join: each pre-open draw must be an integer in [0, 2^33)')
  end
end
if not c[1] then
  local out = {}
  for i = 1, users do
    out[i] = {'not_found', 0, 0, 0, now, 0, 0, 0, 0, 0, -1, '', '', -1}
  end
  return out
end
local groups = c[7] or ''
local opens_at = num(c[1])
local paused = flag(c[3]) and 1 or 0
-- paused is reported on its own: the line stands as when open (places kept, nobody admitted).
local avail, held = counter(KEYS[2]), counter(KEYS[3])
local state = sale_state(now, opens_at, num(c[2]), c[3], c[4], avail, held)

local max_len = num(ARGV[1])
-- ZCARD of skip, read at the batch's first queue_full check and kept current after (a join only
-- ever takes places out of skip: revisit); nil until then. One read a batch instead of one a
-- new place (max_queue_length is set by default).
local skipped
local grace_ms = num(ARGV[2])
local code_failures = num(ARGV[3])
-- A spread line (cfg.line_shards > 1): the places live on the line shards, and the sale's q and
-- skip stay empty; the line's length is the leader's last count (wr.line_length).
local spread = num(c[11]) > 1
local qlen, line_seq = redis.call('ZCARD', KEYS[4]), 0
if spread then
  -- The line as the leader last counted it, plus the places made since (line_placed counts
  -- every new place of the line; line_placed_at is its value at that count): leaves and
  -- admissions since are not taken off, so the figure errs high by one tick's at most.
  local w = redis.call('HMGET', KEYS[7], 'line_length', 'line_seq', 'line_placed',
    'line_placed_at')
  qlen, line_seq = num(w[1]) + math.max(0, num(w[3]) - num(w[4])), num(w[2])
end
-- A spread batch's new places, user -> score: a second join of one user in the batch gets the
-- same score back (not a second arrival).
local placed = {}
local rate = num(c[5])
local pow_on = num(c[10]) > 0

-- The ETA's inputs, read at the first waiting answer: no join changes them (a lapsed admission
-- a join clears was no longer counted as active).
local eta_free, eta_limited
local function reply(st, position, deadline, new, rank)
  local free, limited = 0, -1
  if st == 'waiting' or st == 'placed' then
    if eta_free == nil then
      eta_free, eta_limited = eta_inputs({c[12], c[13]}, avail, held, KEYS[5], KEYS[7], now)
    end
    free, limited = eta_free, eta_limited
  end
  return {st, position, deadline, opens_at, now, qlen, paused, new, rate, free, limited,
    c[6] or '', groups, rank or -1}
end

-- How many priority groups the sale has: public's rank.
local public = public_rank(groups)

-- What the batch's new places add to the report's totals and its per-second arrivals (one
-- field: the batch has one clock), written once as sums after the last user: nothing in the
-- script reads them. qseq is not batched so: Redis keeps what a script wrote before an error,
-- so a call that failed half way would leave places whose arrival numbers qseq had not
-- counted, and later arrivals would get the same order keys; a lost report count costs only
-- a figure. And whether this batch's slot of the report's arrival checkpoints is known to be
-- marked (report_checkpoint would change nothing after the first).
local joined, joined_early, arrived = 0, 0, 0
local arrived_field = report_field('a', now_s, opens_at)
local checkpointed = false
local unshown = eta_waits(KEYS[15])

-- One user's join: the user id, the pre-open draw, the edge's verdict and the challenge's expiry,
-- the code's hash, the user's spent-marker and codefail keys.
local function one(user, draw_arg, verdict, expiry, code, spent_key, fail_key)
  -- A draw sale has no line (design/draw.md): its entries are made elsewhere, nothing is written.
  if c[9] == 'draw' then
    return reply('draw', 0, 0, 0)
  end

  if state == 'closed' or state == 'sold_out' then
    return reply(state, 0, 0, 0)
  end

  local deadline = redis.call('ZSCORE', KEYS[5], user)
  if deadline then
    deadline = tonumber(deadline)
    if deadline > now then
      return reply('admitted', 0, deadline, 0)
    end
    -- The admission lapsed unused: the user may queue again, at the back.
    redis.call('ZREM', KEYS[5], user)
  end

  -- The report (lib/prelude.lua): a new place is an arrival, with its join time in wt when it
  -- is sampled and, after the opening, a checkpoint of its arrival number when it is the first
  -- of its slot; a waiting answer's ETA is noted once as the first one shown.
  local function place(new, score)
    local sampled = false
    if new == 1 then
      if report_sampled(math.floor(score / ORDER), qlen - 1) then
        redis.call('HSET', KEYS[11], user, fmt(now))
        sampled = true
      end
      local n = arrival_number(score)
      if n and not checkpointed then
        report_checkpoint(KEYS[14], n, now)
        checkpointed = true
      end
      joined = joined + 1
      if arrived_field then
        arrived = arrived + 1
      elseif now < opens_at then
        joined_early = joined_early + 1
      end
    end
    if spread then
      if new == 1 and not sampled then
        -- A place lost on a shard left its wt entry here (hdel_users in
        -- lib/prelude.lua): a new place not sampled must not inherit it.
        hdel_users(KEYS[11], {user})
      end
      -- new 2: the place is sampled for the report, so its shard notes the first ETA shown.
      return reply('placed', score, line_seq, sampled and 2 or new, group_rank(score))
    end
    if state == 'scheduled' then
      if sampled then
        eta_wait_add(unshown, user)
      end
      return reply('scheduled', 0, 0, new, group_rank(score))
    end
    local position = redis.call('ZRANK', KEYS[4], user) + 1
    local r = reply('waiting', position, 0, new, group_rank(score))
    local eta = eta_raw_ms(position, rate, paused, r[10], r[11])
    if sampled then
      -- Its wt entry was written just now, without an ETA: noted without reading it back, or
      -- left to wait for one.
      if eta then
        redis.call('HSET', KEYS[11], user, fmt(now) .. ':' .. fmt(eta) .. ':' .. fmt(now))
      else
        eta_wait_add(unshown, user)
      end
    else
      note_eta(KEYS[11], unshown, user, now, eta)
    end
    return r
  end

  if placed[user] then
    return place(0, placed[user])
  end
  local standing, moved, score = revisit(KEYS[4], KEYS[8], KEYS[7], user, now_s, grace_ms)
  qlen = qlen + moved
  -- Out of skip: brought back (live, moved 1), or lost there (moved 0).
  if skipped and ((standing == 'live' and moved == 1) or (standing == 'lost' and moved == 0)) then
    skipped = skipped - 1
  end
  if standing == 'live' then
    if moved == 1 then
      eta_wait_back(KEYS[11], unshown, user)
    end
    return place(0, score)
  end
  if standing == 'lost' then
    hdel_users(KEYS[11], {user}, KEYS[15])
  end
  -- No place, or it was lost past the grace: this join starts a new one.

  -- No place: the request's body and proof of work decide (door.md §1), before queue_full.
  verdict = verdict or 'none'
  if verdict == 'bad' then
    return reply('bad_request', 0, 0, 0)
  end
  local spend = false
  if pow_on then
    if verdict == 'none' then
      return reply('pow_required', 0, 0, 0)
    elseif verdict ~= 'ok' then
      return reply('pow_invalid', 0, 0, 0)
    end
    if now >= num(expiry) then
      return reply('pow_expired', 0, 0, 0)
    end
    -- Spent here, in the same call that checks it (SET NX answers false when the marker is
    -- there already): one Redis call a join instead of an EXISTS now and a SET later. The two
    -- answers that must not spend it (queue_full, no_key) take it back with unspend below;
    -- nothing outside this script sees the marker in between (a script runs alone).
    if not redis.call('SET', spent_key, '1', 'NX', 'PXAT', fmt(num(expiry))) then
      return reply('pow_spent', 0, 0, 0)
    end
    spend = true
  end

  -- The challenge stays spent, until it would have expired anyway (door.md §1), for the join
  -- that makes the place and for one whose access code is refused; a join that ends queue_full
  -- (or no_key) gives it back: the buyer's work is not lost to a line that had no room.
  local function unspend()
    if spend then
      redis.call('DEL', spent_key)
    end
  end

  -- Access codes and groups (door.md §2): the code decides the group (the rank of its group in
  -- cfg.groups); without one the buyer is public (rank #groups), which the presale refuses.
  local rank = public
  code = code or ''
  local redeem = false
  if code ~= '' then
    local failures = num(redis.call('GET', fail_key))
    if failures >= code_failures then
      return reply('code_rate_limited', 0, math.max(0, redis.call('PTTL', fail_key)), 0)
    end
    local found = redis.call('HGET', KEYS[9], code)
    local group_of_code = found and string.match(found, '^([^:]+):')
    local code_rank
    if group_of_code then
      local i = 0
      for name in string.gmatch(groups, '[^,]+') do
        if name == group_of_code then
          code_rank = i
          break
        end
        i = i + 1
      end
    end
    if not code_rank then
      if redis.call('INCR', fail_key) == 1 then
        redis.call('PEXPIRE', fail_key, 3600000)
      end
      return reply('access_code_invalid', 0, 0, 0)
    end
    if redis.call('HEXISTS', KEYS[10], code .. user) == 0 then
      local uses = tonumber(string.match(found, ':(%d+)$')) or 1
      if num(redis.call('HGET', KEYS[10], code)) >= uses then
        return reply('access_code_used', 0, 0, 0)
      end
      redeem = true
    end
    rank = code_rank
  elseif now < num(c[8]) then
    return reply('access_code_required', 0, 0, 0)
  end

  if max_len > 0 then
    skipped = skipped or redis.call('ZCARD', KEYS[8])
    if qlen + skipped >= max_len then
      unspend()
      return reply('queue_full', 0, 0, 0)
    end
  end

  local band = rank * GROUP_BAND
  local key
  if state == 'scheduled' then
    local draw = tonumber(draw_arg)
    local low = draw % PRE_KEYS
    local step = (draw >= PRE_KEYS) and 1 or -1
    local free = false
    -- With 10^6 users in 2^32 keys of a group a collision is rare (p < 3e-4 per join); 64 probes
    -- never run out.
    for _ = 1, 64 do
      local lo = (band + low) * ORDER
      if redis.call('ZCOUNT', KEYS[4], fmt(lo), fmt(lo + ORDER - 1)) == 0 then
        free = true
        break
      end
      low = (low + step) % PRE_KEYS
    end
    if not free then
      unspend()
      return reply('no_key', 0, 0, 0)
    end
    key = band + low
  else
    key = band + PRE_KEYS + redis.call('INCR', KEYS[6])
  end
  if redeem then
    -- The code's use is this user's for good: a rejoin with it spends nothing more.
    redis.call('HINCRBY', KEYS[10], code, 1)
    redis.call('HSET', KEYS[10], code .. user, 1)
  end
  local score = key * ORDER + now_s % ORDER
  if spread then
    placed[user] = score
    redis.call('HINCRBY', KEYS[7], 'line_placed', 1)
  else
    redis.call('ZADD', KEYS[4], fmt(score), user)
  end
  qlen = qlen + 1
  return place(1, score)
end

local out = {}
for i = 1, users do
  local a = 3 + 5 * (i - 1)
  out[i] = one(ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], KEYS[14 + 2 * i],
    KEYS[15 + 2 * i])
end
if joined > 0 then
  redis.call('HINCRBY', KEYS[12], 'joined', joined)
end
if joined_early > 0 then
  redis.call('HINCRBY', KEYS[12], 'joined_before_open', joined_early)
end
if arrived > 0 then
  redis.call('HINCRBY', KEYS[13], arrived_field, arrived)
end
return out
