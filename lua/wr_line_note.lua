-- wr_line_note.lua: the first ETAs a spread line's shards noted (wr_line_fold.lua took them),
-- written into the sale's wt entries as wr_status.lua's note_eta writes them on one shard
-- (issue #22 §2; waitroom/src/line/tick.rs, fold). An entry that has an ETA already keeps it
-- (the first one shown stays), and a buyer without an entry (admitted, left) gets none.
--
-- KEYS[1]  wt (hash: user -> "<join ms>[:<first ETA ms>:<shown ms>]", see report_sampled and
--          note_eta in lib/prelude.lua)
-- ARGV     pairs: user id (16 raw bytes), "<first ETA ms>:<shown ms>"
--
-- Returns  how many entries took an ETA
local noted = 0
for i = 1, #ARGV - 1, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and not string.find(v, ':', 1, true) then
    redis.call('HSET', KEYS[1], ARGV[i], v .. ':' .. ARGV[i + 1])
    noted = noted + 1
  end
end
return noted
