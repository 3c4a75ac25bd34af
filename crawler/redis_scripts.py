"""The Lua scripts that change a shared crawl's Redis keys.

Each step of the crawl's life cycle that must not interleave with another worker's (take work and
leave the idle set, check that everyone is idle, delete the crawl as the last one out) is one
script, run atomically by the server. They live apart from their caller,
:class:`crawler.redis_coordination.SharedCrawl`, because they are another language with their own
contract: the comment above each names the ``KEYS`` and ``ARGV`` it expects, in order.
Time comes from Redis (``TIME``), never from a worker's clock.

The scripts that hand out work or report on the crawl first check the crawl's ``alive`` token
(see :attr:`crawler.redis_keys.CrawlKeys.alive`) and fail with an error starting with
:data:`FRONTIER_LOST` when it is gone, without touching anything: a crawl whose queue and
duplicate filter vanished must not carry on as if it had simply run out of work.
"""

FRONTIER_LOST = "SHARED_FRONTIER_LOST"

_NOW = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# Fail (an error reply, nothing written) unless the alive key holds this worker's token.
_ALIVE = (
    """
local function check_alive(key, token)
  if redis.call('GET', key) ~= token then
    error({err = '"""
    + FRONTIER_LOST
    + """ alive token gone: Redis lost the data of this crawl'})
  end
end
"""
)

# Drop workers whose last heartbeat is older than stale_after seconds.
_PRUNE = """
local function prune(workers, idle, t, stale_after)
  local entries = redis.call('HGETALL', workers)
  for i = 1, #entries, 2 do
    if t - tonumber(entries[i + 1]) > stale_after then
      redis.call('HDEL', workers, entries[i])
      redis.call('SREM', idle, entries[i])
    end
  end
end
"""

# KEYS: workers, idle, alive. ARGV: worker, candidate token, key ttl (0: none).
# Returns {workers registered, the crawl's token}: the candidate if this worker is the first.
JOIN = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], tostring(now()))
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('SET', KEYS[3], ARGV[2], 'NX') and tonumber(ARGV[3]) > 0 then
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
end
return {redis.call('HLEN', KEYS[1]), redis.call('GET', KEYS[3])}
"""
)

# KEYS: seeded, start_urls, finished. ARGV: worker, url...
# Returns 1 (seeded by us), 0 (already seeded) or -1 (the crawl finished earlier).
SEED = """
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  for i = 2, #ARGV do
    redis.call('RPUSH', KEYS[2], ARGV[i])
  end
  return 1
end
return 0
"""

# KEYS: requests, workers, idle, alive. ARGV: worker, token.
POP_REQUEST = (
    _NOW
    + _ALIVE
    + """
check_alive(KEYS[4], ARGV[2])
local found = redis.call('ZRANGE', KEYS[1], 0, 0)
if #found == 0 then
  return false
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], tostring(now()))
return found[1]
"""
)

# KEYS: start_urls, workers, idle, alive. ARGV: worker, batch size, token.
POP_START_URLS = (
    _NOW
    + _ALIVE
    + """
check_alive(KEYS[4], ARGV[3])
local n = tonumber(ARGV[2])
local found = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #found > 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], tostring(now()))
end
return found
"""
)

# KEYS: workers, alive, then every other key of the crawl. ARGV: worker, key ttl (0: none), token.
HEARTBEAT = (
    _NOW
    + _ALIVE
    + """
check_alive(KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], tostring(now()))
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  for i = 2, #KEYS do
    redis.call('EXPIRE', KEYS[i], ttl)
  end
end
return 1
"""
)

# KEYS: requests, start_urls, workers, idle, alive. ARGV: worker, stale_after, token.
# Returns {live workers, busy workers, pending requests + start URLs}.
IDLE = (
    _NOW
    + _PRUNE
    + _ALIVE
    + """
check_alive(KEYS[5], ARGV[3])
local t = now()
redis.call('HSET', KEYS[3], ARGV[1], tostring(t))
redis.call('SADD', KEYS[4], ARGV[1])
prune(KEYS[3], KEYS[4], t, tonumber(ARGV[2]))
local live = redis.call('HKEYS', KEYS[3])
local busy = 0
for _, worker in ipairs(live) do
  if redis.call('SISMEMBER', KEYS[4], worker) == 0 then
    busy = busy + 1
  end
end
local pending = redis.call('ZCARD', KEYS[1]) + redis.call('LLEN', KEYS[2])
return {#live, busy, pending}
"""
)

# KEYS: requests, start_urls, workers, idle, finished marker, alive, then every key of the crawl.
# ARGV: worker, finished (1/0), stale_after, marker ttl (0: leave no marker).
# Returns {deleted (1/0), workers still registered, pending requests + start URLs}.
# The last worker out deletes every key of a finished crawl with nothing pending, and every key
# of a lost one (alive token gone: what is left was written after Redis lost the crawl, and no
# worker has started it anew, or the token would be there).
LEAVE = (
    _NOW
    + _PRUNE
    + """
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
prune(KEYS[3], KEYS[4], now(), tonumber(ARGV[3]))
local remaining = redis.call('HLEN', KEYS[3])
local pending = redis.call('ZCARD', KEYS[1]) + redis.call('LLEN', KEYS[2])
local lost = redis.call('EXISTS', KEYS[6]) == 0
if remaining == 0 and (lost or (pending == 0 and ARGV[2] == '1')) then
  for i = 7, #KEYS do
    redis.call('DEL', KEYS[i])
  end
  local marker_ttl = tonumber(ARGV[4])
  if marker_ttl > 0 and not lost then
    redis.call('SET', KEYS[5], '1', 'EX', marker_ttl)
  end
  return {1, 0, pending}
end
return {0, remaining, pending}
"""
)
