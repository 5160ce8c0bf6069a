-- Drop expired records' entries from their tenant's indexes (a record re-created under the same id
-- since keeps its entries).
-- KEYS: index expiry.  ARGV: limit, every status (comma list), the job key prefix.
-- Returns how many entries were due.
-- Exception to "every key in KEYS": each due member names its job and its tenant's index base
-- ("{job id} {base}", written by the prelude's `expire`), so the job key (prefix .. id), the base and
-- its per-status sets (base .. ':' .. status) are known only here, member by member.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sp = string.find(member, ' ', 1, true)
  local id, base = string.sub(member, 1, sp - 1), string.sub(member, sp + 1)
  if redis.call('EXISTS', ARGV[3] .. id) == 0 then
    redis.call('ZREM', base, id)
    for s in string.gmatch(ARGV[2], '[^,]+') do redis.call('ZREM', base .. ':' .. s, id) end
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
