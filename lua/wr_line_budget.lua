-- wr_line_budget.lua: step 1 of a tick of a line spread over shards (README "A line that
-- outgrows one Redis: the design"; waitroom/src/line/tick.rs), on the sale's slot: the sale's
-- state and the tick's budget, as wr_admit.lua computes them (admit_budget in
-- lib/prelude.lua), with nothing charged: the places are chosen on the shards next, and
-- wr_line_commit.lua charges what it writes. Like wr_admit.lua it stamps the outage credit's
-- tick_at (and resumed_at after a gap) and notes sold_out_at. It also takes the order side's
-- notes of changed admissions (admch, adm_changed in lib/prelude.lua) for the shards' copies
-- (wr_line_sync.lua), and keeps admch's mark '' in it, which is what lets the order scripts
-- note them: a sale on one shard never has an admch. The notes taken wait in admchf until the
-- leader has carried them into every shard and deleted it (line::tick::sync); while admchf
-- holds some, a tick takes those again (with each buyer's deadline as it is now) and no new
-- ones, so a leader that dies between the two loses none. A note made after the take is a new
-- member of admch, carried by a later tick: each buyer's copy ends at adm's latest deadline.
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, max_active, per_user_limit,
--          admit_per_second, notice, groups)
-- KEYS[2]  avail
-- KEYS[3]  held
-- KEYS[4]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[5]  wr hash (admit_tat, admit_full, tick_at, resumed_at; limited_rate_milli read for
--          the ETA; line_placed, the line's new places so far, read for the count)
-- KEYS[6]  rep hash (sold_out_at)
-- KEYS[7]  qseq (the line's arrival counter, wr_join.lua's KEYS[6]; read only)
-- KEYS[8]  admch (set: buyers whose admission an order changed, and the mark '')
-- KEYS[9]  admchf (set: the notes taken and not yet carried into the shards)
-- ARGV[1]  most users to admit in this tick (>= 0)
-- ARGV[2]  abandon_after in ms
-- ARGV[3]  units each admitted buyer may claim (0 = cfg.per_user_limit)
-- ARGV[4]  admissions per second r for the rate credit (<= 0: nobody is admitted)
-- ARGV[5]  the rate credit's tolerance tau in ms; 0: no rate credit
-- ARGV[6]  the outage gap in ms; 0: no outage credit
-- ARGV[7]  most admch notes to take (>= 0; the rest wait for the next tick)
-- ARGV[8]  the rate credit's carry in ms (wr_admit.lua's ARGV[10]); 0: none
--
-- Returns  {state, budget, limit, abandon_ms, active, groups, arrivals,
--           opens_at, closes_at, paused, admit_per_second, notice, group_names, free,
--           limited_rate_milli, placed, changes, rate_full}
--   state     open | paused | scheduled | sold_out | closed | not_found (budget 0 unless open)
--   budget    how many places the tick may admit
--   limit     rate | max_active | stock | state
--   abandon_ms  the abandon_after the shards judge silence by: ARGV[2], or 0 while the outage
--             credit runs (nobody is silent: wr_line_head.lua's 0)
--   active    admissions live now
--   groups    the sale's priority groups besides the public one (cfg.groups)
--   arrivals  places made after the opening so far (qseq): with groups, where the line's
--             scores jump (line::segment_starts, the positions' segment bounds)
--   then what a poll of the line reads, which the leader publishes to every line shard's
--   lmeta (wr_line_status.lua; not_found answers zeros and ''):
--   opens_at, closes_at  cfg's, epoch ms (0 for none)
--   paused    1 when cfg says paused
--   admit_per_second  cfg's rate; notice cfg's ('' for none); group_names cfg.groups
--   free, limited_rate_milli  the ETA's inputs (eta_inputs in lib/prelude.lua)
--   placed    wr.line_placed now (wr_join.lua counts a spread line's new places there): the
--             leader stores it with its count of the line (wr.line_placed_at)
--   changes   the notes taken, flat: user (16 raw bytes), the user's adm deadline now (epoch
--             ms, 0 for none), ...: what wr_line_sync.lua writes into the users' shards
--   rate_full 1 when wr.admit_full was set (the last tick used all its rate credit, so this
--             one carries): a tick that then admits nobody makes an empty wr_line_commit.lua
--             call to clear it
local now, _, now_f = clock()
local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed',
  'max_active', 'per_user_limit', 'groups', 'admit_per_second', 'notice')
if not c[1] then
  return {'not_found', 0, 'state', 0, 0, 0, 0, 0, 0, 0, 0, '', '', 0, -1, 0, {}, 0}
end
local changes = {}
local taken = redis.call('SMEMBERS', KEYS[9])
if #taken == 0 then
  for _, user in ipairs(redis.call('SPOP', KEYS[8], math.max(0, math.floor(num(ARGV[7]))))) do
    if user ~= '' then
      taken[#taken + 1] = user
      redis.call('SADD', KEYS[9], user)
    end
  end
end
for _, user in ipairs(taken) do
  changes[#changes + 1] = user
  changes[#changes + 1] = num(redis.call('ZSCORE', KEYS[4], user))
end
redis.call('SADD', KEYS[8], '')
local groups = public_rank(c[7])
local arrivals = num(redis.call('GET', KEYS[7]))
local opens_at = num(c[1])
local avail, held = num(redis.call('GET', KEYS[2])), num(redis.call('GET', KEYS[3]))
local state = sale_state(now, opens_at, num(c[2]), c[3], c[4], avail, held)
local active = redis.call('ZCOUNT', KEYS[4], '(' .. fmt(now), '+inf')
local abandon_ms = outage_credit(KEYS[5], now, num(ARGV[6]), num(ARGV[2]))
if abandon_ms == math.huge then
  abandon_ms = 0
end
if avail <= 0 and opens_at <= now then
  redis.call('HSETNX', KEYS[6], 'sold_out_at', fmt(now))
end
local free, limited = eta_inputs(KEYS[1], avail, held, KEYS[4], KEYS[5], now)
local function said(budget, limit, full)
  return {state, budget, limit, abandon_ms, active, groups, arrivals, opens_at, num(c[2]),
    flag(c[3]) and 1 or 0, num(c[8]), c[9] or '', c[7] or '', free, limited,
    num(redis.call('HGET', KEYS[5], 'line_placed')), changes, full and 1 or 0}
end
if state ~= 'open' then
  return said(0, 'state', false)
end
local need = math.floor(num(ARGV[3]))
if need <= 0 then
  need = math.max(1, math.floor(num(c[6])))
end
local budget, limit, credit = admit_budget(KEYS[5], num(ARGV[1]), num(ARGV[4]), num(ARGV[5]),
  num(ARGV[8]), num(c[5]), active, need, avail, held, now_f)
return said(math.max(budget, 0), limit, credit and credit.full)
