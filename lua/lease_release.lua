-- lease_release.lua: give a leader lease up at shutdown, so a successor need not wait it out.
--
-- KEYS[1]  the lease key
-- ARGV[1]  holder id
--
-- Returns  1 when the lease was held by ARGV[1] and is now deleted; 0 otherwise (unchanged).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
