-- wr_entry.lua: the Redis side of a draw sale's join and status (design/draw.md "Entering").
--
-- An entry is made in MySQL (core/src/sale/entries.rs), committed before the answer; this
-- script only reads the sale and the user's indexed entry, and, for a join that may make a new
-- entry, judges and spends its proof of work (door.md §1, as wr_join does for a line). The edge
-- writes the index (KEYS[4]) after MySQL committed.
--
-- KEYS[1]  cfg hash (opens_at, closes_at, paused, closed, notice, pow_difficulty, mode,
--          entries_close_at)
-- KEYS[2]  avail (units available)
-- KEYS[3]  held (units in HELD + PAYING orders)
-- KEYS[4]  ent (hash: user id, 16 raw bytes -> the entry: 32 hex digits, with ':<rank>' once
--          ranked; '-' in front once withdrawn)
-- KEYS[5]  drw (hash: the draw's counters; field promoted = wins handed out so far)
-- KEYS[6]  win (hash: user id -> the win: '<claim deadline ms>:<max_quantity>' while open,
--          'claimed' or 'forfeited')
-- KEYS[7]  the challenge's spent marker, pow:<random as 16 hex digits> (touched only with
--          ARGV[2] = ok)
-- ARGV[1]  user id, 16 raw bytes
-- ARGV[2]  what the call is: status (read only), or a join's verdict on its body and proof of
--          work: none | bad | invalid | ok (as wr_join's ARGV[5])
-- ARGV[3]  with ok: the challenge's expiry, epoch ms
--
-- Returns  {result, entry, opens_at, entries_close_at, now, paused, notice, state, promoted, win}
--   result   not_found  the sale is not armed
--            fcfs       not a draw sale (nothing read further)
--            entered    the user has an entry (not withdrawn): entry is its value
--            enter      a join may make (or renew) an entry: entries are taken now and the
--                       proof of work, if the sale asks one, was genuine and is spent now
--            none       no live entry and none may be made now (state says why; entry is the
--                       withdrawn entry's value, or '')
--            bad_request | pow_required | pow_invalid | pow_expired | pow_spent
--                       a join's refusal, judged only when an entry may be made
--   state    closed | sold_out | scheduled | paused | open (sale_state in lib/prelude.lua);
--            open and now < entries_close_at is the entering state
--   promoted the drw counter (0 before the draw promoted anyone); win the user's win or ''
local now = clock()

local c = redis.call('HMGET', KEYS[1], 'opens_at', 'closes_at', 'paused', 'closed', 'notice',
  'pow_difficulty', 'mode', 'entries_close_at')
if not c[1] then
  return {'not_found', '', 0, 0, now, 0, '', '', 0, ''}
end
if c[7] ~= 'draw' then
  return {'fcfs', '', 0, 0, now, 0, '', '', 0, ''}
end
local opens_at = num(c[1])
local close_at = num(c[8])
local paused = flag(c[3]) and 1 or 0
local state = sale_state(now, opens_at, num(c[2]), c[3], c[4], KEYS[2], KEYS[3])
local user = ARGV[1]
local entry = redis.call('HGET', KEYS[4], user) or ''
local promoted = num(redis.call('HGET', KEYS[5], 'promoted'))
local win = redis.call('HGET', KEYS[6], user) or ''

local function reply(result)
  return {result, entry, opens_at, close_at, now, paused, c[5] or '', state, promoted, win}
end

if entry ~= '' and string.sub(entry, 1, 1) ~= '-' then
  return reply('entered')
end
local verdict = ARGV[2] or 'status'
if verdict == 'status' or state ~= 'open' or now >= close_at then
  return reply('none')
end
if verdict == 'bad' then
  return reply('bad_request')
end
if num(c[6]) > 0 then
  if verdict == 'none' then
    return reply('pow_required')
  elseif verdict ~= 'ok' then
    return reply('pow_invalid')
  end
  if now >= num(ARGV[3]) then
    return reply('pow_expired')
  end
  if redis.call('SET', KEYS[7], '1', 'NX', 'PXAT', fmt(num(ARGV[3]))) == false then
    return reply('pow_spent')
  end
end
return reply('enter')
