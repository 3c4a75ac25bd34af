"""Coordination of one crawl shared by several workers through Redis.

scrapy-redis already gives every worker the same request queue and duplicate filter. What it
leaves open is the life cycle of a crawl that several processes share:

* **Seeding.** Every worker is started with the same arguments, but the start URLs must enter the
  crawl once, however many workers start at the same moment (a ``SET NX`` guard).
* **Knowing when the crawl is done.** A worker with nothing to do cannot tell on its own whether
  the crawl is finished: another worker may be parsing a page that will enqueue a hundred more.
  Each worker is registered in a hash (last heartbeat, by Redis' clock so nodes' clocks don't
  matter) and adds itself to an *idle* set when its engine runs dry. Taking work from the shared
  queue and leaving the idle set happen in one script, so no worker is ever counted idle while it
  holds a request. The crawl is done when both queues are empty and every live worker is idle.
* **Cleaning up.** With ``SCHEDULER_PERSIST=True`` nothing deletes the crawl's keys. The last
  worker to leave a finished crawl deletes all of them in the same script that unregisters it; a
  worker that leaves while others still work, or a last worker that was stopped early, deletes
  nothing, so the crawl can be resumed by starting workers with the same ``crawl_id``.
* **Late workers.** Once a crawl's keys are gone, a worker started late with the same
  ``crawl_id`` (say, one that sat in a busy node's queue) would seed and crawl everything again.
  With ``SHARED_DONE_MARKER_TTL`` > 0 the last worker leaves a ``finished`` marker for that long
  instead, and late workers exit without fetching anything.

Workers that stop heartbeating (killed, node lost) are dropped from the registry after
``SHARED_WORKER_TIMEOUT`` seconds so they can't hold the crawl open forever. Requests they had
taken from the queue are lost, as with plain scrapy-redis.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import socket
import uuid
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import BaseSettings
from scrapy_redis import connection
from scrapy_redis.queue import PriorityQueue

from crawler.sharedkeys import DEFAULT_KEY_PREFIX, crawl_key_base

if TYPE_CHECKING:
    from scrapy import Request

logger = logging.getLogger(__name__)

# scrapy-redis 0.9.1 still passes ``spider=`` to the stats collector; harmless on Scrapy 2.19 and
# not ours to fix, so keep it out of every shared crawl's log.
warnings.filterwarnings("ignore", category=ScrapyDeprecationWarning, module=r"scrapy_redis(\.|$)")

CRAWL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class SharedCrawlError(ValueError):
    """A shared crawl cannot start: bad crawl id, bad Redis URL, Redis unreachable, bad settings."""


def crawl_id_argument(value: str) -> str:
    """Parse the ``crawl_id`` spider argument.

    It becomes part of every Redis key of the crawl, so it is restricted to characters that are
    neither glob patterns (``*?[``), key separators (``:``), cluster hash tags (``{}``) nor
    %-format directives (scrapy-redis formats its key templates with ``%``).
    """
    value = value.strip()
    if not CRAWL_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"expected 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {value!r}"
        )
    return value


def redact_url(url: str) -> str:
    """``url`` without its password, for log lines and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{user}:***@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"


@dataclass(frozen=True)
class CrawlKeys:
    """Every Redis key of one shared crawl.

    The crawl's part is wrapped in a hash tag (``{spider:crawl_id}``) so that on Redis Cluster all
    keys land in one slot and the scripts below may touch them together.
    """

    base: str

    @classmethod
    def build(cls, prefix: str, spider: str, crawl_id: str) -> CrawlKeys:
        return cls(crawl_key_base(prefix, spider, crawl_id))

    @property
    def requests(self) -> str:
        """scrapy-redis' request queue (sorted set by priority)."""
        return f"{self.base}:requests"

    @property
    def dupefilter(self) -> str:
        """scrapy-redis' request fingerprints (set)."""
        return f"{self.base}:dupefilter"

    @property
    def start_urls(self) -> str:
        """URLs (plain or JSON) waiting to become requests (list); seeded once, may be fed."""
        return f"{self.base}:start_urls"

    @property
    def seeded(self) -> str:
        """The once-per-crawl seeding guard; holds the id of the worker that seeded."""
        return f"{self.base}:seeded"

    @property
    def workers(self) -> str:
        """Registered workers: worker id -> last heartbeat (Redis server time, seconds)."""
        return f"{self.base}:workers"

    @property
    def idle(self) -> str:
        """Ids of registered workers that currently have nothing in flight."""
        return f"{self.base}:idle"

    @property
    def finished(self) -> str:
        """Optional marker left by the last worker (SHARED_DONE_MARKER_TTL): don't crawl again."""
        return f"{self.base}:finished"

    def all(self) -> list[str]:
        return [
            self.requests,
            self.dupefilter,
            self.start_urls,
            self.seeded,
            self.workers,
            self.idle,
            self.finished,
        ]


# --- Lua scripts ---------------------------------------------------------------------------------
# Each runs atomically on the server. Time comes from Redis (TIME), never from a worker's clock.

_NOW = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

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

# KEYS: workers, idle. ARGV: worker.
_JOIN = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], tostring(now()))
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('HLEN', KEYS[1])
"""
)

# KEYS: seeded, start_urls, finished. ARGV: worker, url...
# Returns 1 (seeded by us), 0 (already seeded) or -1 (the crawl finished earlier).
_SEED = """
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

# KEYS: requests, workers, idle. ARGV: worker.
_POP_REQUEST = (
    _NOW
    + """
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

# KEYS: start_urls, workers, idle. ARGV: worker, batch size.
_POP_START_URLS = (
    _NOW
    + """
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

# KEYS: workers, then every key of the crawl. ARGV: worker, key ttl (0: none).
_HEARTBEAT = (
    _NOW
    + """
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

# KEYS: requests, start_urls, workers, idle. ARGV: worker, stale_after.
# Returns {live workers, busy workers, pending requests + start URLs}.
_IDLE = (
    _NOW
    + _PRUNE
    + """
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

# KEYS: requests, start_urls, workers, idle, finished marker, then every key of the crawl.
# ARGV: worker, finished (1/0), stale_after, marker ttl (0: leave no marker).
# Returns {deleted (1/0), workers still registered, pending requests + start URLs}.
_LEAVE = (
    _NOW
    + _PRUNE
    + """
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
prune(KEYS[3], KEYS[4], now(), tonumber(ARGV[3]))
local remaining = redis.call('HLEN', KEYS[3])
local pending = redis.call('ZCARD', KEYS[1]) + redis.call('LLEN', KEYS[2])
if remaining == 0 and pending == 0 and ARGV[2] == '1' then
  for i = 6, #KEYS do
    redis.call('DEL', KEYS[i])
  end
  local marker_ttl = tonumber(ARGV[4])
  if marker_ttl > 0 then
    redis.call('SET', KEYS[5], '1', 'EX', marker_ttl)
  end
  return {1, 0, 0}
end
return {0, remaining, pending}
"""
)


class SeedOutcome(enum.Enum):
    """What a worker's seeding attempt found; reported in the ``crawlfleet/shared/seed`` stat."""

    SEEDED = "seeded"
    ALREADY_SEEDED = "already_seeded"
    ALREADY_FINISHED = "already_finished"
    NOTHING_TO_SEED = "nothing_to_seed"


@dataclass(frozen=True)
class CrawlStatus:
    """What an idle worker learns about the whole crawl."""

    workers: int
    busy: int
    pending: int

    @property
    def done(self) -> bool:
        return self.busy == 0 and self.pending == 0


@dataclass(frozen=True)
class LeaveOutcome:
    """What unregistering did: ``deleted`` only for the last worker out of a finished crawl."""

    deleted: bool
    remaining_workers: int
    pending: int


def new_worker_id(job: str | None = None) -> str:
    """Unique per process; names the host and pid (and Scrapyd job) so a stuck entry is traceable."""
    parts = [socket.gethostname(), str(os.getpid())]
    if job:
        parts.append(str(job))
    parts.append(uuid.uuid4().hex[:8])
    return ":".join(parts)


class SharedCrawl:
    """One worker's handle on a shared crawl: registry, seeding, work hand-out, idle and leave."""

    def __init__(
        self,
        client: redis.Redis,
        keys: CrawlKeys,
        worker_id: str,
        *,
        worker_timeout: float = 60.0,
        key_ttl: int = 0,
        done_marker_ttl: int = 0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.worker_id = worker_id
        self.worker_timeout = worker_timeout
        self.key_ttl = key_ttl
        self.done_marker_ttl = done_marker_ttl
        self._join = client.register_script(_JOIN)
        self._seed = client.register_script(_SEED)
        self._pop_request = client.register_script(_POP_REQUEST)
        self._pop_start_urls = client.register_script(_POP_START_URLS)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._idle = client.register_script(_IDLE)
        self._leave = client.register_script(_LEAVE)

    def join(self) -> int:
        """Register as a busy worker; returns how many workers are registered now."""
        return int(self._join(keys=[self.keys.workers, self.keys.idle], args=[self.worker_id]))

    def seed(self, urls: list[str]) -> SeedOutcome:
        """Push ``urls`` as the crawl's start URLs unless some worker already did."""
        if not urls:
            return SeedOutcome.NOTHING_TO_SEED
        result = self._seed(
            keys=[self.keys.seeded, self.keys.start_urls, self.keys.finished],
            args=[self.worker_id, *urls],
        )
        return {1: SeedOutcome.SEEDED, 0: SeedOutcome.ALREADY_SEEDED}.get(
            int(result), SeedOutcome.ALREADY_FINISHED
        )

    def pop_request(self, queue_key: str | None = None) -> bytes | None:
        """Take the highest-priority request, marking this worker busy in the same step."""
        return self._pop_request(
            keys=[queue_key or self.keys.requests, self.keys.workers, self.keys.idle],
            args=[self.worker_id],
        )

    def pop_start_urls(self, count: int, key: str | None = None) -> list[bytes]:
        """Take up to ``count`` start URLs, marking this worker busy if there were any."""
        return list(
            self._pop_start_urls(
                keys=[key or self.keys.start_urls, self.keys.workers, self.keys.idle],
                args=[self.worker_id, max(1, count)],
            )
        )

    def heartbeat(self) -> None:
        """Prove this worker is alive; also pushes back the safety-net expiry of the crawl's keys."""
        live_keys = [key for key in self.keys.all() if key != self.keys.finished]
        self._heartbeat(keys=[self.keys.workers, *live_keys], args=[self.worker_id, self.key_ttl])

    def mark_idle(self) -> CrawlStatus:
        """Record that this worker has nothing in flight; report on the whole crawl."""
        live, busy, pending = self._idle(
            keys=[self.keys.requests, self.keys.start_urls, self.keys.workers, self.keys.idle],
            args=[self.worker_id, self.worker_timeout],
        )
        return CrawlStatus(workers=int(live), busy=int(busy), pending=int(pending))

    def leave(self, *, finished: bool) -> LeaveOutcome:
        """Unregister; the last worker out of a finished crawl with nothing pending deletes it all."""
        deleted, remaining, pending = self._leave(
            keys=[
                self.keys.requests,
                self.keys.start_urls,
                self.keys.workers,
                self.keys.idle,
                self.keys.finished,
                *self.keys.all(),
            ],
            args=[
                self.worker_id,
                "1" if finished else "0",
                self.worker_timeout,
                self.done_marker_ttl,
            ],
        )
        return LeaveOutcome(bool(deleted), int(remaining), int(pending))


def purge_crawl(
    client: redis.Redis, spider: str, crawl_id: str, prefix: str = DEFAULT_KEY_PREFIX
) -> int:
    """Delete every key of a crawl, e.g. one abandoned after its workers were cancelled.

    Returns how many keys existed. Don't call it while workers of that crawl still run.
    """
    return int(client.delete(*CrawlKeys.build(prefix, spider, crawl_id).all()))


def connect(settings: BaseSettings) -> redis.Redis:
    """A client built the way scrapy-redis builds it, checked with PING.

    Fails with a :class:`SharedCrawlError` that names the (password-redacted) URL, so a bad
    ``REDIS_URL`` stops the worker before its first request instead of mid-crawl.
    """
    url = str(settings.get("REDIS_URL") or "")
    shown = redact_url(url) if url else "REDIS_HOST/REDIS_PORT"
    try:
        client = connection.get_redis_from_settings(settings)
    except ValueError as exc:
        raise SharedCrawlError(f"REDIS_URL {shown!r} is not a valid Redis URL: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise SharedCrawlError(f"cannot reach Redis at {shown}: {exc}") from None
    return client


class SharedPriorityQueue(PriorityQueue):
    """scrapy-redis' priority queue whose pop also marks the popping worker busy, atomically.

    Without this a worker could take the last request between another worker's "is everyone
    idle?" check and its own "I'm busy" update, and the crawl would be declared done too early.
    """

    def pop(self, timeout: int = 0) -> Request | None:
        shared: SharedCrawl | None = getattr(self.spider, "shared", None)
        if shared is None:  # not a shared spider: behave like the stock queue
            return super().pop(timeout)
        data = shared.pop_request(self.key)
        if data is None:
            return None
        note_busy = getattr(self.spider, "note_busy", None)
        if note_busy is not None:
            note_busy()
        return self._decode_request(data)


__all__ = [
    "DEFAULT_KEY_PREFIX",
    "CrawlKeys",
    "CrawlStatus",
    "LeaveOutcome",
    "SeedOutcome",
    "SharedCrawl",
    "SharedCrawlError",
    "SharedPriorityQueue",
    "connect",
    "crawl_id_argument",
    "new_worker_id",
    "purge_crawl",
    "redact_url",
]
