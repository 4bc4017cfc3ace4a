-- restore_order.lua: put back the hash of an order Redis forgot, from its MySQL row (issue #21).
--
-- A Redis failover can lose acknowledged writes, among them a whole order: the reserve's order
-- hash, the buyer's unit count and the idempotency key went in one script, so they are lost
-- together. If the recorder had already copied the order's outbox entry, MySQL keeps the
-- order, and the sale's order arrows go on in MySQL alone (the confirm worker books an
-- approved payment for it; the forgotten-hold check ends a HELD one). The units are set right
-- by the stock repair (`stock_repair.lua`), but without the hash the order is missing from
-- Redis for good (`sale audit` reports `missing_in_redis`), the buyer's units no longer count
-- against `per_user_limit`, and a client retrying the idempotency key would make a second
-- order. The recorder (workers/src/forgotten.rs) walks each sale's orders once, and for an
-- ended one (paid, expired, cancelled, failed) calls this script, which restores all three if
-- the hash is missing, and changes nothing if Redis has it: an order Redis knows moves only by
-- its own arrows. Idempotent: a second call, or a second recorder, finds the hash.
--
-- Only ended orders come here: their units are counted by `sold` (paid) or nowhere (the rest),
-- so no stock counter, timer or deadline index entry is written; a PAID order's units go back
-- into `u:<user>` (HELD + PAYING + PAID units), the others' do not. The arrow that ended the
-- order also ended the buyer's admission (`confirm.lua`, `release.lua`: ZREM adm), and that
-- write was lost with it: an admission left in `adm` counts the buyer as active, and the
-- admitter's stock rule keeps a unit for them until it runs out, so the last units of a sale
-- sat unsold (forced-loss chaos runs). So the admission is ended here too, but only the one
-- the order was made under (its deadline no later than the order's creation plus the
-- admission window): a buyer who joined again and was admitted anew keeps the new one.
--
-- KEYS[1]  o:<order> (the order hash)
-- KEYS[2]  u:<user uuid text> (the user's units in HELD + PAYING + PAID orders)
-- KEYS[3]  idem:<user uuid text>:<idempotency key> (hash: order, fp)
-- KEYS[4]  adm (zset: user 16 raw bytes -> admission deadline ms)
-- KEYS[5]  admch (set: buyers whose admission an order changed; reserve.lua's KEYS[15])
-- ARGV[1]  the order's state: paid | expired | cancelled | failed
-- ARGV[2]  quantity (integer >= 1)
-- ARGV[3]  the idempotency key's time left in ms (0: lapsed, not restored)
-- ARGV[4]  the idempotency fingerprint ("<sale>:<quantity>", as reserve.lua's caller sends)
-- ARGV[5]  order id, UUID text
-- ARGV[6]  the order's user, 16 raw bytes (the member of adm)
-- ARGV[7]  the latest admission deadline (ms) the order can have been made under: its
--          creation plus the admission window
-- ARGV[8…] the hash's fields and values, in pairs (as reserve.lua writes them)
--
-- Returns  1 when the hash was missing and was restored, 0 when Redis has the order (nothing
--          changed)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
if ARGV[1] == 'paid' then
  redis.call('INCRBY', KEYS[2], ARGV[2])
end
local idem_ttl = tonumber(ARGV[3]) or 0
if idem_ttl > 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[3], 'order', ARGV[5], 'fp', ARGV[4])
  redis.call('PEXPIRE', KEYS[3], idem_ttl)
end
local admission = redis.call('ZSCORE', KEYS[4], ARGV[6])
if admission and tonumber(admission) <= tonumber(ARGV[7]) then
  redis.call('ZREM', KEYS[4], ARGV[6])
  adm_changed(KEYS[5], ARGV[6])
end
return 1
