-- wr_line_commit.lua: step 5 of a tick of a line spread over shards (README "A line that
-- outgrows one Redis: the design"; waitroom/src/line/tick.rs), on the sale's slot: the places
-- the shards took (wr_line_take.lua, pending in their ladm) are admitted: written into adm with
-- the deadline now + window, counted, the rate credit charged with what was written, the report
-- told (admit_record in lib/prelude.lua, as wr_admit.lua does). The budget is judged again here
-- (admit_budget: a second caller, a stale leader, may have admitted since step 1), and places
-- past it are left pending for the next tick. A place already in adm (a repeat after a lost
-- reply, or what a dead leader left) is answered with its deadline and not counted again.
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, max_active, per_user_limit)
-- KEYS[2]  avail
-- KEYS[3]  held
-- KEYS[4]  adm (zset: user -> admission deadline, epoch ms)
-- KEYS[5]  wr hash (admitted_total, admit_tat, admit_full)
-- KEYS[6]  wt, KEYS[7] rep, KEYS[8] rps, KEYS[9] wtc: the report's keys, as in wr_admit.lua
-- ARGV[1]  admission window in ms (the deadline is now + window)
-- ARGV[2]  units each admitted buyer may claim (0 = cfg.per_user_limit)
-- ARGV[3]  admissions per second r for the rate credit
-- ARGV[4]  the rate credit's tolerance tau in ms; 0: no rate credit
-- ARGV[5]  the admission tick in ms (for the report's ETA error)
-- ARGV[6]  the line's length after the tick (the report's series), -1 to leave it
-- ARGV[7]  the rate credit's carry in ms (wr_admit.lua's ARGV[10]); 0: none
-- ARGV[8..] pairs: user (16 raw bytes), queue score (decimal), in merged order
--
-- Returns  {state, admitted, users, deadlines}
--   state     as wr_line_budget.lua; nothing is written unless open
--   admitted  places admitted now (counted and charged)
--   users, deadlines  every place now in adm among those asked, in ARGV order, with the
--             deadline adm holds (for wr_line_settle.lua); the rest stay pending
local now, now_s, now_f = clock()
local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed',
  'max_active', 'per_user_limit')
if not c[1] then
  return {'not_found', 0, {}, {}}
end
local opens_at = num(c[1])
local avail, held = num(redis.call('GET', KEYS[2])), num(redis.call('GET', KEYS[3]))
local state = sale_state(now, opens_at, num(c[2]), c[3], c[4], avail, held)
if state ~= 'open' then
  return {state, 0, {}, {}}
end
local active = redis.call('ZCOUNT', KEYS[4], '(' .. fmt(now), '+inf')
local need = math.floor(num(ARGV[2]))
if need <= 0 then
  need = math.max(1, math.floor(num(c[6])))
end
local budget, _, credit = admit_budget(KEYS[5], (#ARGV - 7) / 2, num(ARGV[3]), num(ARGV[4]),
  num(ARGV[7]), num(c[5]), active, need, avail, held, now_f)
local deadline = fmt(now + num(ARGV[1]))
local done, held_at, fresh, scores = {}, {}, {}, {}
for i = 8, #ARGV, 2 do
  local user = ARGV[i]
  local at = redis.call('ZSCORE', KEYS[4], user)
  if at then
    done[#done + 1] = user
    held_at[#held_at + 1] = fmt(tonumber(at))
  elseif #fresh < budget then
    fresh[#fresh + 1] = user
    scores[#fresh] = tonumber(ARGV[i + 1])
    done[#done + 1] = user
    held_at[#held_at + 1] = deadline
  end
end
if #fresh > 0 then
  admit_record({adm = KEYS[4], wr = KEYS[5], wt = KEYS[6], rep = KEYS[7], rps = KEYS[8],
    wtc = KEYS[9]}, fresh, scores, deadline, now, now_s, opens_at, num(ARGV[5]))
end
rate_charge(KEYS[5], credit, #fresh)
local qlen = num(ARGV[6])
if qlen >= 0 and (qlen > 0 or #fresh > 0) then
  local field = report_field('l', now_s, opens_at)
  if field then
    redis.call('HSET', KEYS[8], field, qlen)
  end
end
return {state, #fresh, done, held_at}
