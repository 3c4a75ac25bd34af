"""What a shared crawl needs from redis-py and scrapy-redis: a checked client, a queue class, and
a record of whether Redis answers.

:class:`SharedPriorityQueue` is the ``SCHEDULER_QUEUE_CLASS`` that
:class:`crawler.spiders.shared.SharedSpider` plugs into the scrapy-redis scheduler,
:func:`connect` builds a client the way scrapy-redis does but fails early with a readable error,
and :class:`RedisHealth` turns a Redis outage into two log lines and a few stats instead of a
traceback at every look at the queue. The crawl's own bookkeeping is in
:mod:`crawler.redis_coordination`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import BaseSettings
from scrapy_redis import connection
from scrapy_redis.queue import PriorityQueue

from crawler.redis_coordination import FrontierLost

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from crawler.redis_coordination import SharedCrawl

logger = logging.getLogger(__name__)

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


class RedisHealth:
    """Whether this worker reaches Redis, logged when that changes rather than at every call.

    While Redis is down the engine looks at the queue every idle tick; each failed call is only
    counted (``crawlfleet/shared/redis_errors``). The first failure of an outage is one WARNING
    with its reason (``crawlfleet/shared/redis_outages`` counts them), the first success after it
    one INFO line. An outage longer than ``give_up_after`` seconds (0: never) is an ERROR, and
    ``give_up`` is called once to stop the worker.
    """

    def __init__(
        self,
        crawl_id: str,
        crawler: Crawler,
        *,
        give_up_after: float,
        give_up: Callable[[], None],
    ) -> None:
        self.crawl_id = crawl_id
        self.crawler = crawler  # its stats exist only once the crawl runs, so read them late
        self.give_up_after = give_up_after
        self.give_up = give_up
        self.down_since: float | None = None
        self.failed_calls = 0
        self.gave_up = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: Exception, doing: str) -> None:
        self.crawler.stats.inc_value("crawlfleet/shared/redis_errors")
        self.failed_calls += 1
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self.failed_calls = 1
            self.crawler.stats.inc_value("crawlfleet/shared/redis_outages")
            logger.warning(
                "shared crawl %r: Redis is unreachable (%s: %s: %s); waiting for it%s",
                self.crawl_id,
                doing,
                type(exc).__name__,
                exc,
                f" for up to {self.give_up_after:.0f}s" if self.give_up_after else "",
            )
            return
        down_for = now - self.down_since
        if self.give_up_after and down_for >= self.give_up_after and not self.gave_up:
            self.gave_up = True
            logger.error(
                "shared crawl %r: Redis unreachable for %.0fs (%s: %s); stopping this worker",
                self.crawl_id,
                down_for,
                type(exc).__name__,
                exc,
            )
            self.give_up()

    def ok(self) -> None:
        if self.down_since is None:
            return
        down_for = time.monotonic() - self.down_since
        self.down_since = None
        self.crawler.stats.inc_value("crawlfleet/shared/redis_down_seconds", round(down_for, 1))
        logger.info(
            "shared crawl %r: Redis is back after %.1fs (%d failed call(s))",
            self.crawl_id,
            down_for,
            self.failed_calls,
        )


class SharedPriorityQueue(PriorityQueue):
    """scrapy-redis' priority queue whose pop also marks the popping worker busy, atomically.

    Without this a worker could take the last request between another worker's "is everyone
    idle?" check and its own "I'm busy" update, and the crawl would be declared done too early.

    While Redis is unreachable it hands out nothing and reports one pending request: the engine
    then neither crawls nor declares the spider idle (an idle worker that cannot ask Redis would
    finish as if the crawl were done) and asks again at its next tick. The outage is logged by
    the spider's :class:`RedisHealth`; a vanished frontier is reported to the spider.
    """

    def pop(self, timeout: int = 0) -> Request | None:
        shared: SharedCrawl | None = getattr(self.spider, "shared", None)
        if shared is None:  # not a shared spider: behave like the stock queue
            return super().pop(timeout)
        health: RedisHealth = self.spider.redis_health
        try:
            data = shared.pop_request(self.key)
        except FrontierLost as exc:
            self.spider.frontier_lost(exc)
            return None
        except redis.RedisError as exc:
            health.failed(exc, "taking a request")
            return None
        health.ok()
        if data is None:
            return None
        note_busy = getattr(self.spider, "note_busy", None)
        if note_busy is not None:
            note_busy()
        return self._decode_request(data)

    def __len__(self) -> int:
        health: RedisHealth | None = getattr(self.spider, "redis_health", None)
        if health is None:
            return super().__len__()
        try:
            pending = super().__len__()
        except redis.RedisError as exc:
            health.failed(exc, "counting pending requests")
            return 1  # unknown: never let an unanswered count look like an empty crawl
        health.ok()
        return pending
