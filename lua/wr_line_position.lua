-- wr_line_position.lua: where buyers stand in a line spread over shards (issue #22 §2;
-- waitroom/src/line.rs): the own shard's rank, exact, plus the other shards' places ahead,
-- counted from the curves the leader last published to this shard's lmeta. Read only, and
-- every key is the shard's own: a poll of a spread line never leaves its shard.
--
-- The curves are packed as line.rs's pack writes them: knots (x, count), each two
-- little-endian doubles (16 bytes), sorted by x; a count below x is linear between knots, 0
-- before the first and the last count after it (CountCurve::at, the same arithmetic, so the
-- two agree to the bit).
--
-- KEYS[1]  q of the buyers' line shard (zset: user -> score, the layout of wr_join.lua)
-- KEYS[2]  lmeta of that shard (hash: `all` the sum of every shard's curve, `own` this
--          shard's, `at` when the leader read them, epoch ms)
-- ARGV[1..n]  user ids, 16 raw bytes each
--
-- Returns  {at, position_1, ..., position_n}
--   at        lmeta's `at`, 0 when nothing was published yet
--   position  others ahead + own rank + 1 when the user waits in this shard's q, else 0

-- The count a packed curve gives for x (CountCurve::at).
local function curve_at(packed, x)
  local n = #packed / 16
  if n == 0 then
    return 0
  end
  -- The first knot at or past x (partition_point), by bisection.
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local kx = struct.unpack('<d', packed, (mid - 1) * 16 + 1)
    if kx < x then
      lo = mid + 1
    else
      hi = mid
    end
  end
  if lo == n + 1 then
    local _, c = struct.unpack('<dd', packed, (n - 1) * 16 + 1)
    return c
  end
  local x1, c1 = struct.unpack('<dd', packed, (lo - 1) * 16 + 1)
  if x1 == x then
    return c1
  end
  if lo == 1 then
    return 0
  end
  local x0, c0 = struct.unpack('<dd', packed, (lo - 2) * 16 + 1)
  return c0 + (c1 - c0) * (x - x0) / (x1 - x0)
end

local m = redis.call('HMGET', KEYS[2], 'at', 'all', 'own')
local all, own = m[2] or '', m[3] or ''
local out = {num(m[1])}
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score then
    score = tonumber(score)
    local others = math.max(curve_at(all, score) - curve_at(own, score), 0)
    out[i + 1] = redis.call('ZRANK', KEYS[1], ARGV[i]) + 1 + math.floor(others + 0.5)
  else
    out[i + 1] = 0
  end
end
return out
