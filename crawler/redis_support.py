"""What a shared crawl needs from redis-py and scrapy-redis: a checked client and a queue class.

:class:`SharedPriorityQueue` is the ``SCHEDULER_QUEUE_CLASS`` that
:class:`crawler.spiders.shared.SharedSpider` plugs into the scrapy-redis scheduler, and
:func:`connect` builds a client the way scrapy-redis does but fails early with a readable error.
The crawl's own bookkeeping is in :mod:`crawler.redis_coordination`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import BaseSettings
from scrapy_redis import connection
from scrapy_redis.queue import PriorityQueue

if TYPE_CHECKING:
    from scrapy import Request

    from crawler.redis_coordination import SharedCrawl

# scrapy-redis 0.9.1 still passes ``spider=`` to the stats collector; harmless on Scrapy 2.19 and
# not ours to fix, so keep it out of every shared crawl's log.
warnings.filterwarnings("ignore", category=ScrapyDeprecationWarning, module=r"scrapy_redis(\.|$)")


class SharedCrawlError(ValueError):
    """A shared crawl cannot start: bad crawl id, bad Redis URL, Redis unreachable, bad settings."""


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
