"""The Lua scripts of the Redis prompt store: each write is ONE atomic script that also bumps ``seq`` and
publishes the event, so no replica sees a version as current before its bytes exist.

Puts and deletes refuse to run on a Redis without an epoch (``{"", 0}``): the store then first restores
what the replica knows (``RESTORE``, a no-op when another replica restored first), so a write can never
start a new, nearly empty store that makes every replica forget its tasks.
"""

from __future__ import annotations

# KEYS: tasks, versions, pkg, seq, epoch | ARGV: task, version, data, keep, pkg prefix of the task, channel
PUT = """
local epoch = redis.call('GET', KEYS[5])
if not epoch then return {'', 0} end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local seq = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], seq, ARGV[2])
for _, v in ipairs(redis.call('ZRANGE', KEYS[2], 0, -(tonumber(ARGV[4]) + 1))) do
  if v ~= ARGV[2] then redis.call('DEL', ARGV[5] .. v) end
  redis.call('ZREM', KEYS[2], v)
end
redis.call('PUBLISH', ARGV[6], cjson.encode({task=ARGV[1], version=ARGV[2], seq=seq, epoch=epoch}))
return {epoch, seq}
"""

# KEYS: tasks, versions, seq, epoch | ARGV: task, pkg prefix of the task, channel
DELETE = """
local epoch = redis.call('GET', KEYS[4])
if not epoch then return {'', false, 0} end
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
local versions = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, v in ipairs(versions) do redis.call('DEL', ARGV[2] .. v) end
redis.call('DEL', KEYS[2])
if existed == 0 and #versions == 0 then return {epoch, false, 0} end
local seq = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], cjson.encode({task=ARGV[1], version=cjson.null, seq=seq, epoch=epoch}))
return {epoch, existed, seq}
"""

# KEYS: tasks, seq, epoch | ARGV: epoch, seq, key prefix, channel, then task, version, data for every task
RESTORE = """
local current = redis.call('GET', KEYS[3])
if current then return {current, 0} end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
for i = 5, #ARGV, 3 do
  redis.call('SET', ARGV[3] .. 'pkg:' .. ARGV[i] .. ':' .. ARGV[i + 1], ARGV[i + 2])
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', ARGV[3] .. 'versions:' .. ARGV[i], tonumber(ARGV[2]), ARGV[i + 1])
end
redis.call('PUBLISH', ARGV[4], cjson.encode({restored=true, seq=tonumber(ARGV[2]), epoch=ARGV[1]}))
return {ARGV[1], 1}
"""
