-- Members of a sorted set scored in server ms that are at least `age` ms old (age 0 on a set of
-- deadlines: those that have passed), oldest first.
-- KEYS: the set.  ARGV: age ms, limit.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
