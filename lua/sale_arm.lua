-- sale_arm.lua: load one sale's live state into Redis, once (DESIGN §4).
--
-- Arming writes the config hash and the three stock counters together, so no reader ever sees a
-- sale with a config but no counters. A sale that is already armed is left exactly as it is (its
-- counters move with orders from then on), so calling this again, from a retry or a second
-- replica, changes nothing.
--
-- KEYS[1]  the sale's config hash   <prefix>:{s:<sale>}:cfg
-- KEYS[2]  available units           <prefix>:{s:<sale>}:avail   (string integer)
-- KEYS[3]  units held (HELD+PAYING)  <prefix>:{s:<sale>}:held    (string integer)
-- KEYS[4]  units sold (PAID)         <prefix>:{s:<sale>}:sold    (string integer)
-- ARGV[1]  stock_total                integer >= 1
-- ARGV[2]  opens_at                   epoch milliseconds
-- ARGV[3]  closes_at                  epoch milliseconds, 0 = no closing time
-- ARGV[4]  per_user_limit             integer >= 1
-- ARGV[5]  hold_seconds               integer >= 1
-- ARGV[6]  admit_per_second           integer >= 1
-- ARGV[7]  max_active                 integer >= 0, 0 = no limit
-- ARGV[8]  paused                     0 or 1
-- ARGV[9]  closed                     0 or 1
-- ARGV[10] product_id                 UUID text
-- ARGV[11] price                      integer, minor units
-- ARGV[12] currency                   ISO 4217 code
-- ARGV[13] held (optional, default 0)  units already in HELD + PAYING orders (`sale rearm`)
-- ARGV[14] sold (optional, default 0)  units already in PAID orders (`sale rearm`)
-- ARGV[15] pow_difficulty (optional, default 0)  integer 0..24 (design/door.md §1)
-- ARGV[16] groups (optional, default '')  priority group names, highest first, comma-joined
-- ARGV[17] presale_only_until (optional, default 0)  epoch milliseconds, 0 = no presale
-- ARGV[18] notice (optional, default '')  the operator's notice, '' = none
-- ARGV[19] mode (optional)  'draw' for a draw sale (design/draw.md); 'fcfs' or absent for
--          the waiting room's line. Absent: ARGV[20..21] are absent too, and cfg gets none of
--          mode, entries_close_at, claim_seconds and line_shards
-- ARGV[20] entries_close_at (with draw)  epoch milliseconds, > opens_at
--          line_shards (with fcfs)       integer 1..64: the line's shards (issue #22 §2; cfg
--          gets it, the mode is not written)
-- ARGV[21] claim_seconds (with draw)     integer 1..86400
-- (core/src/sale/door.rs validates 15..18, core/src/sale/draw.rs 19..21, the api line_shards;
-- this script checks only what would break readers.)
--
-- Returns  1 when the sale was armed by this call: cfg written with the fields above (mode,
--          entries_close_at and claim_seconds only for a draw sale), avail set
--          to stock_total - held - sold, held and sold as given (avail + held + sold = stock_total);
--          0 when cfg already existed (nothing changed).
--          An error reply (nothing written) when an argument is malformed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end

-- The door's settings, with their defaults when not given.
local pow, groups, presale, notice = ARGV[15] or '0', ARGV[16] or '', ARGV[17] or '0', ARGV[18] or ''

local function int(raw, name, min, max)
  local v = tonumber(raw)
  if v == nil or v ~= math.floor(v) or v < min or (max ~= nil and v > max) then
    return redis.error_reply('ERR sale_arm: ' .. name .. ' must be an integer in range, got ' .. tostring(raw))
  end
  return v
end

local checks = {
  {ARGV[1], 'stock_total', 1}, {ARGV[2], 'opens_at', 0}, {ARGV[3], 'closes_at', 0},
  {ARGV[4], 'per_user_limit', 1}, {ARGV[5], 'hold_seconds', 1}, {ARGV[6], 'admit_per_second', 1},
  {ARGV[7], 'max_active', 0}, {ARGV[8], 'paused', 0, 1}, {ARGV[9], 'closed', 0, 1},
  {ARGV[11], 'price', 0}, {pow, 'pow_difficulty', 0, 24}, {presale, 'presale_only_until', 0},
}
for _, c in ipairs(checks) do
  local v = int(c[1], c[2], c[3], c[4])
  if type(v) == 'table' then
    return v
  end
end
local held, sold = tonumber(ARGV[13] or '0'), tonumber(ARGV[14] or '0')
if held == nil or sold == nil or held < 0 or sold < 0 or held ~= math.floor(held)
    or sold ~= math.floor(sold) or held + sold > tonumber(ARGV[1]) then
  return redis.error_reply('ERR sale_arm: held and sold must be integers >= 0 with held + sold <= stock_total')
end
local draw = ARGV[19]
local line_shards
if draw == 'fcfs' then
  draw = nil
  line_shards = int(ARGV[20] or '1', 'line_shards', 1, 64)
  if type(line_shards) == 'table' then
    return line_shards
  end
elseif draw ~= nil then
  if draw ~= 'draw' then
    return redis.error_reply('ERR sale_arm: mode must be draw or fcfs when given, got ' .. tostring(draw))
  end
  for _, c in ipairs({{ARGV[20], 'entries_close_at', tonumber(ARGV[2]) + 1}, {ARGV[21], 'claim_seconds', 1, 86400}}) do
    local v = int(c[1], c[2], c[3], c[4])
    if type(v) == 'table' then
      return v
    end
  end
end
if ARGV[10] == nil or ARGV[10] == '' or ARGV[12] == nil or ARGV[12] == '' then
  return redis.error_reply('ERR sale_arm: product_id and currency are required')
end

redis.call('HSET', KEYS[1],
  'stock_total', ARGV[1],
  'opens_at', ARGV[2],
  'closes_at', ARGV[3],
  'per_user_limit', ARGV[4],
  'hold_seconds', ARGV[5],
  'admit_per_second', ARGV[6],
  'max_active', ARGV[7],
  'paused', ARGV[8],
  'closed', ARGV[9],
  'product_id', ARGV[10],
  'price', ARGV[11],
  'currency', ARGV[12],
  'pow_difficulty', pow,
  'groups', groups,
  'presale_only_until', presale,
  'notice', notice)
if draw ~= nil then
  redis.call('HSET', KEYS[1], 'mode', draw, 'entries_close_at', ARGV[20], 'claim_seconds', ARGV[21])
end
if line_shards ~= nil and line_shards > 1 then
  redis.call('HSET', KEYS[1], 'line_shards', fmt(line_shards))
end
redis.call('SET', KEYS[2], fmt(tonumber(ARGV[1]) - held - sold))
redis.call('SET', KEYS[3], fmt(held))
redis.call('SET', KEYS[4], fmt(sold))
return 1
