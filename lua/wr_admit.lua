-- wr_admit.lua: one admission tick for one sale, run by the single admitter leader.
--
-- Takes users from the head of the queue (layout: wr_join.lua) and records each in adm with
-- the deadline now + window. Users silent for longer than abandon_after are skipped, never
-- admitted: moved from q to skip with the same score (door.md §6: a skipped user who polls
-- again within the return grace gets the place back, see wr_status.lua), so silent users cannot
-- stall the line (they do not count against the tick's budget, only against scan_limit);
-- silent users left at the head after the last admission are skipped as well, so the
-- positions of those behind them stay honest. The entries looked at are read in chunks of at
-- least 256 and written back with a few bulk commands (ZREMRANGEBYRANK, ZADD), so a wall of
-- silent users at the head costs about a microsecond each: a tick passes over scan_limit of
-- them (the admitter's default: at least 4096) and admits the live user behind them.
-- The tick admits at most
--   min(ARGV[1],                                       the budget of the caller
--       the rate credit,                               when ARGV[7] > 0 (below)
--       max_active - active,                           when cfg.max_active > 0
--       ceil((avail + held) / need) - active)          the stock rule below
-- where active = admissions whose deadline is still ahead (ZCOUNT adm (now +inf).
--
-- Rate credit (GCRA, the generic cell rate algorithm; optional). With ARGV[6] = r admissions a
-- second and ARGV[7] = tolerance tau in ms, the tick admits at most
--   floor((now + tau - max(tat, now)) * r / 1000)
-- and then moves tat (the theoretical arrival time, wr field admit_tat, epoch ms with
-- fractions) to max(tat, now) + admitted * 1000 / r. Only what was admitted is charged, so
-- budget left unused (short queue, stock, max_active, pause) is not spent. In steady operation
-- each tick admits r * (time since the previous tick); after a lull the credit is capped at
-- r * tau (the burst). So over any span of W seconds at most r * W + r * tau / 1000 users are
-- admitted, measured on the Redis clock, whichever process calls and however many do: the
-- state lives here, next to the queue, so a new leader continues where the old one stopped and
-- a stale leader that still calls cannot add to the rate. A tat ahead of now + tau (the Redis
-- clock stepped back) is pulled back to now + tau.
--
-- Carry (ARGV[10] = c ms; optional). A tick that comes later than tau after the one before
-- loses the credit of the excess: on a busy Redis, where the calls ahead of the admitter's
-- vary its timing by tens of ms, that is a few per cent of the rate. So when the tick before
-- used every cell it was granted (wr field admit_full = 1: the rate, not the line, bound it),
-- max(tat, now) above becomes max(tat, now - c): a tick up to c late loses nothing. After a
-- lull (a tick that admitted less than its credit) the flag is 0 and the burst stays r * tau.
-- Over any span of W seconds at most r * W + r * (tau + c) / 1000 are then admitted (the span
-- that starts at a late tick gets the c it caught up); a tick's budget is at most
-- r * (tau + c) / 1000. admit_full is written with tat, or alone when it changes.
--
-- Stock rule. Every active buyer may still claim `need` units (need = ARGV[5], or
-- cfg.per_user_limit when ARGV[5] is 0; at least 1), and the units they can claim are those
-- available plus those held in live orders (held units of an active buyer are part of that
-- buyer's claim; units of orders that end come back to avail). So a tick admits a buyer only
-- while the buyers before them leave at least one unit over:
--   (active + admitted - 1) * need < avail + held        (stock_room in lib/prelude.lua)
-- so every buyer let in can buy at least one unit, and the last of them may find fewer than
-- `need` (rounding the other way would stall the line for good once fewer than `need` units
-- are left).
-- With the order side keeping an ordering buyer's adm entry until the order ends (see
-- queue.rs), nobody is admitted for stock that the buyers already in cannot leave over, and
-- stock that comes back (an expired or failed order, more stock) resumes admission at the
-- next tick.
--
-- Outage credit (door.md §5: an outage does not count toward abandon_after). With ARGV[8] = gap,
-- every tick stamps wr.tick_at (epoch ms), whatever the sale's state; a tick that finds the last
-- stamp older than the gap (Redis, or every admitter, was away: buyers could not poll) records
-- wr.resumed_at = now, and until abandon_after has passed since then nobody is skipped, here or
-- by the reaper (wr_reap.lua reads resumed_at too): every buyer gets a whole abandon_after to poll again after
-- the outage, so the line goes on in its order instead of admitting first whoever came back
-- first. A buyer still silent after that is skipped as usual (and gets the place back within
-- the grace).
--
-- The tick admits nothing (and keeps every place) when the sale is paused, scheduled, closed or
-- sold out (avail <= 0 and held <= 0; every status call then answers sold_out by itself). A
-- closed sale keeps no skipped place (nobody can come back to it): the tick deletes skip and
-- counts its entries in abandoned_total.
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, max_active, per_user_limit)
-- KEYS[2]  avail
-- KEYS[3]  held
-- KEYS[4]  q (the queue)
-- KEYS[5]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[6]  wr hash (counters: admitted_total, skipped_total, abandoned_total; admit_tat and
--          admit_full, the rate state; the admitter also keeps the measured rate
--          admit_rate_milli here, see queue.rs)
-- KEYS[7]  skip (zset: skipped places, the layout of q)
-- KEYS[8]  wt (hash: user -> a sampled buyer's report entry,
--          "<join ms>[:<first ETA ms>:<shown ms>]", see report_sampled and note_eta in
--          lib/prelude.lua): read and removed for the admitted users
-- KEYS[9]  rep (hash: the report's totals and histograms: sold_out_at, the first tick that
--          found no unit available; w:<bucket> time in line from max(join, opens_at) to
--          admission; e:<bucket> |wait since the first ETA shown - that ETA in whole seconds|,
--          e_within those within 0.2 x ETA + 2 s (door.md §3); buckets: report_bucket)
-- KEYS[10] rps (hash: the report's per-second series: m:<second> admissions, l:<second> the
--          queue length after the second's last tick)
-- KEYS[11] wtc (zset: the report's arrival checkpoints: the join time of an admitted buyer
--          without a wt entry, see checkpoint_join in lib/prelude.lua)
-- KEYS[12] wtp (hash: sampled buyers not yet shown an ETA, eta_waits in lib/prelude.lua): an
--          admitted or skipped user's entry goes
-- ARGV[1]  most users to admit in this tick (>= 0)
-- ARGV[2]  abandon_after in ms: a user silent for longer is skipped
-- ARGV[3]  admission window in ms (the deadline is now + window)
-- ARGV[4]  most queue entries to look at in this tick (1..100000; bounds the script's run time)
-- ARGV[5]  units each admitted buyer may claim (0 = cfg.per_user_limit)
-- ARGV[6]  optional: admissions per second r for the rate credit (<= 0: nobody is admitted)
-- ARGV[7]  optional: the rate credit's tolerance tau in ms; absent or 0: no rate credit, the
--          caller's ARGV[1] alone limits the tick (and admit_tat is neither read nor written)
-- ARGV[8]  optional: the outage gap in ms (below); absent or 0: no outage credit (tick_at and
--          resumed_at are neither read nor written)
-- ARGV[9]  optional: the admission tick in ms (the edge adds it to the ETA it shows; the
--          report adds it to the raw ETA noted in wt); absent = 0
-- ARGV[10] optional: the rate credit's carry c in ms (above); absent or 0: none
--
-- Returns  {state, admitted, skipped, queue_length, active, limit, users}
--   state     open | paused | scheduled | sold_out | closed | not_found
--   admitted  users admitted now; skipped: silent users moved from q to skip now
--   queue_length  after the tick; active: admissions live after the tick
--   limit     what stopped the tick: rate (ARGV[1] or the rate credit) | max_active | stock |
--             empty (queue ran out) |
--             scan (scan_limit reached) | state (not open, or paused)
--   users     the admitted users' 16-byte ids, in queue order
-- The rate credit uses now_f, the clock to the microsecond (fractions of a ms carry between ticks).
-- The rules above are lib/prelude.lua's admit_budget, scan_live, outage_credit and
-- admit_record, which a line spread over shards uses as well (wr_line_budget.lua,
-- wr_line_head.lua, wr_line_commit.lua): one rule, one place.
local now, now_s, now_f = clock()

local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed',
  'max_active', 'per_user_limit')
if not c[1] then
  return {'not_found', 0, 0, 0, 0, 'state', {}}
end
local opens_at, closes_at = num(c[1]), num(c[2])
local avail, held = num(redis.call('GET', KEYS[2])), num(redis.call('GET', KEYS[3]))
local state = sale_state(now, opens_at, closes_at, c[3], c[4], avail, held)

local qlen = redis.call('ZCARD', KEYS[4])
local active = redis.call('ZCOUNT', KEYS[5], '(' .. fmt(now), '+inf')
local abandon_ms = outage_credit(KEYS[6], now, num(ARGV[8]), num(ARGV[2]))
if state == 'closed' then
  local gone = redis.call('ZCARD', KEYS[7])
  if gone > 0 then
    redis.call('DEL', KEYS[7])
    redis.call('HINCRBY', KEYS[6], 'abandoned_total', gone)
  end
end
if avail <= 0 and opens_at <= now then
  redis.call('HSETNX', KEYS[9], 'sold_out_at', fmt(now))
end
local function sample(queue_length, admitted)
  if queue_length > 0 or admitted > 0 then
    local field = report_field('l', now_s, opens_at)
    if field then
      redis.call('HSET', KEYS[10], field, queue_length)
    end
  end
end
if state ~= 'open' then
  sample(qlen, 0)
  return {state, 0, 0, qlen, active, 'state', {}}
end

local need = math.floor(num(ARGV[5]))
if need <= 0 then
  need = math.max(1, math.floor(num(c[6])))
end
local budget, limit, credit = admit_budget(KEYS[6], num(ARGV[1]), num(ARGV[6]), num(ARGV[7]),
  num(ARGV[10]), num(c[5]), active, need, avail, held, now_f)

local deadline = fmt(now + num(ARGV[3]))
local scan_limit = math.min(100000, math.max(1, math.floor(num(ARGV[4]))))
-- Entries are looked at from the head in rank order and left in q until the end (so ranks stay
-- put); every entry looked at is either admitted or skipped, so the first `scanned` ranks of q
-- are exactly the entries to remove. Silent users now at the head are skipped too (within
-- scan_limit, scan_live's `past`), even when the budget is spent or max_active is full, so the
-- positions of those behind them stay honest. The head after a tick is nearly always live, so
-- that walk mostly ends in the chunk already read; reading the rest of scan_limit at once
-- instead (4,000 entries and their scores made into Lua strings) cost every tick of an open
-- sale ~3 ms of Redis, whatever it found (BENCHMARKS.md "line-sim", 2026-12-07).
local users, scores, skipped, scanned, why = scan_live(KEYS[4], budget, scan_limit, now_s,
  abandon_ms, true)
if why then
  limit = why
end
if scanned > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, scanned - 1)
end
if #skipped > 0 then
  zadd_pairs(KEYS[7], skipped)
  -- A skipped place waits for a first ETA no longer (eta_waits in lib/prelude.lua).
  local members = {}
  for i = 2, #skipped, 2 do
    members[#members + 1] = skipped[i]
  end
  hdel_users(KEYS[12], members)
  redis.call('HINCRBY', KEYS[6], 'skipped_total', #skipped / 2)
end
if #users > 0 then
  admit_record({adm = KEYS[5], wr = KEYS[6], wt = KEYS[8], rep = KEYS[9], rps = KEYS[10],
    wtc = KEYS[11], wtp = KEYS[12]}, users, scores, deadline, now, now_s, opens_at,
    num(ARGV[9]))
end
rate_charge(KEYS[6], credit, #users)
sample(qlen - scanned, #users)
return {state, #users, #skipped / 2, qlen - scanned, active + #users, limit, users}
