-- lease_acquire.lua: take or renew a leader lease (one admitter, one sweeper per sale).
--
-- KEYS[1]  the lease key (a string holding the holder id, with a TTL)
-- ARGV[1]  holder id (unique per process and role)
-- ARGV[2]  lease length in milliseconds (> 0)
--
-- Returns  1 when ARGV[1] holds the lease after the call (taken, or renewed by its holder);
--          0 when another holder has it (nothing changed).
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
