"""The settings a shared crawl pins, and the timing settings it reads (``SHARED_*``).

Kept apart from :class:`crawler.spiders.shared.SharedSpider` so the spider module holds only the
crawl's behaviour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings

from crawler.redis_support import SharedCrawlError

logger = logging.getLogger(__name__)

# Settings a shared crawl cannot work without. They win over ``-s`` (with a warning) because any
# other value silently breaks the crawl: PERSIST=False lets the first worker to finish wipe the
# shared queue, the stock dupefilter crashes under the scrapy-redis scheduler, the stock queue
# class doesn't mark a worker busy when it takes a request, and scrapy-redis' own scheduler drops
# the requests it cannot queue while Redis is away (crawler.redis_scheduler holds them).
REQUIRED_SETTINGS: dict[str, Any] = {
    "SCHEDULER": "crawler.redis_scheduler.SharedScheduler",
    "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
    "SCHEDULER_QUEUE_CLASS": "crawler.redis_support.SharedPriorityQueue",
    "SCHEDULER_PERSIST": True,
    "SCHEDULER_FLUSH_ON_START": False,
    "SCHEDULER_IDLE_BEFORE_CLOSE": 0,
    "REDIS_START_URLS_AS_SET": False,
    "REDIS_START_URLS_AS_ZSET": False,
}


# Above ``-s``: Scrapy re-applies the command-line settings after ``update_settings`` runs, and
# equal priority would let them back in.
ENFORCED_PRIORITY = SETTINGS_PRIORITIES["cmdline"] + 1


def enforce(settings: BaseSettings, name: str, value: Any) -> None:
    """Pin ``name`` to ``value`` above every user priority; warn if that overrides their value."""
    current = settings.get(name)
    explicit = (settings.getpriority(name) or 0) > SETTINGS_PRIORITIES["default"]
    if explicit and current not in (None, value):
        logger.warning("ignoring %s=%r: shared crawls need %r", name, current, value)
    settings.set(name, value, priority=ENFORCED_PRIORITY)


@dataclass(frozen=True)
class SharedTiming:
    """How often a worker looks at Redis, proves it is alive, and how long it waits."""

    idle_tick: float
    heartbeat_interval: float
    worker_timeout: float
    max_idle_time: float
    key_ttl: int
    done_marker_ttl: int
    redis_down_timeout: float

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> SharedTiming:
        try:
            timing = cls(
                idle_tick=settings.getfloat("SHARED_IDLE_TICK", 1.0),
                heartbeat_interval=settings.getfloat("SHARED_HEARTBEAT_INTERVAL", 5.0),
                worker_timeout=settings.getfloat("SHARED_WORKER_TIMEOUT", 60.0),
                max_idle_time=settings.getfloat("SHARED_MAX_IDLE_TIME", 600.0),
                key_ttl=settings.getint("SHARED_KEY_TTL", 7 * 24 * 3600),
                done_marker_ttl=settings.getint("SHARED_DONE_MARKER_TTL", 0),
                redis_down_timeout=settings.getfloat("SHARED_REDIS_DOWN_TIMEOUT", 60.0),
            )
        except ValueError as exc:
            raise SharedCrawlError(f"bad SHARED_* setting: {exc}") from None
        if timing.idle_tick <= 0 or timing.heartbeat_interval <= 0:
            raise SharedCrawlError("SHARED_IDLE_TICK and SHARED_HEARTBEAT_INTERVAL must be > 0")
        # A live worker must never look dead: allow a few missed heartbeats.
        if timing.worker_timeout < 3 * timing.heartbeat_interval:
            raise SharedCrawlError(
                f"SHARED_WORKER_TIMEOUT ({timing.worker_timeout}) must be at least three "
                f"SHARED_HEARTBEAT_INTERVALs ({timing.heartbeat_interval})"
            )
        if (
            min(
                timing.max_idle_time,
                timing.key_ttl,
                timing.done_marker_ttl,
                timing.redis_down_timeout,
            )
            < 0
        ):
            raise SharedCrawlError(
                "SHARED_MAX_IDLE_TIME, SHARED_KEY_TTL, SHARED_DONE_MARKER_TTL and "
                "SHARED_REDIS_DOWN_TIMEOUT must be >= 0"
            )
        return timing
