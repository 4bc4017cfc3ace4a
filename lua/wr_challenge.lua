-- wr_challenge.lua: what GET /w/{sale}/challenge needs to issue a proof-of-work challenge
-- (door.md §1). Read only: a challenge is stateless, issuing one writes nothing.
--
-- KEYS[1]  cfg hash (opens_at: the sale is armed; pow_difficulty: 0 or missing = off)
-- ARGV     none
--
-- Returns  {armed, difficulty, now_ms}
--   armed       1 when the sale is armed (cfg has opens_at), else 0 (404 as join answers)
--   difficulty  cfg.pow_difficulty as an integer, 0 when missing or not a number
--   now_ms      Redis TIME, epoch ms: the challenge's expiry counts from the clock the join
--               script judges it by
local now = clock()
local c = redis.call('HMGET', KEYS[1], 'opens_at', 'pow_difficulty')
if not c[1] then
  return {0, 0, now}
end
return {1, math.floor(num(c[2])), now}
