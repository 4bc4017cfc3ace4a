-- sale_edit.lua: change a sale's creation settings in Redis, only while it is still scheduled
-- (issue #24: `PATCH /api/admin/sales/{id}` and `PATCH /api/admin/products/{id}` before opening).
--
-- The check and the write are one step, so a field given here never changes after the sale
-- opened: the api's own check (MySQL row, Redis clock) comes first for a clear answer, and this
-- script is the one that counts when the opening falls between the two. "Still scheduled" is
-- the rule of `sale_state` before opening, read from this sale's own cfg and counters:
-- the Redis clock is before the current `opens_at`, the sale is not closed, and nothing is held
-- or sold (avail = stock_total), so setting a new stock keeps avail + held + sold = stock_total.
--
-- KEYS[1]  the sale's config hash   <prefix>:{s:<sale>}:cfg
-- KEYS[2]  available units           <prefix>:{s:<sale>}:avail
-- KEYS[3]  units held (HELD+PAYING)  <prefix>:{s:<sale>}:held
-- KEYS[4]  units sold (PAID)         <prefix>:{s:<sale>}:sold
-- ARGV[1]  the new stock_total, an integer >= 1, or '' to keep it
-- ARGV[2], ARGV[3], ...  cfg field, value pairs to write (opens_at, closes_at, per_user_limit,
--          hold_seconds, entries_close_at, claim_seconds, product_id, price, currency, and the
--          live settings changed by the same PATCH); the api validated them
--
-- Returns  1 when written: the pairs into cfg, and with a new stock both cfg stock_total and
--          avail set to it;
--          0 when the sale is not armed (nothing written);
--         -1 when the sale is no longer scheduled (nothing written).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local now_ms = clock()
local cfg = redis.call('HMGET', KEYS[1], 'opens_at', 'closed', 'stock_total')
local stock_total = num(cfg[3])
if now_ms >= num(cfg[1]) or flag(cfg[2]) or num(redis.call('GET', KEYS[3])) ~= 0
    or num(redis.call('GET', KEYS[4])) ~= 0 or num(redis.call('GET', KEYS[2])) ~= stock_total then
  return -1
end
local stock = ARGV[1]
if stock ~= '' then
  local v = tonumber(stock)
  if v == nil or v < 1 or v ~= math.floor(v) then
    return redis.error_reply('ERR sale_edit: stock_total must be an integer >= 1, got ' .. stock)
  end
end
if (#ARGV - 1) % 2 ~= 0 then
  return redis.error_reply('ERR sale_edit: field, value pairs expected')
end
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
if stock ~= '' then
  redis.call('HSET', KEYS[1], 'stock_total', stock)
  redis.call('SET', KEYS[2], stock)
end
return 1
