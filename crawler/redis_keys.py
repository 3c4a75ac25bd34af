"""The Redis keys of one shared crawl, and the crawl id they are named after.

The key base rule itself is in :mod:`crawler.sharedkeys`, which stays free of imports so the control
plane can use it; this module names each key under that base (what scrapy-redis, the seeding guard
and the worker registry keep where) and validates the ``crawl_id`` that goes into every one of
them. It talks to no server: :mod:`crawler.redis_coordination` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crawler.sharedkeys import crawl_key_base

CRAWL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


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


@dataclass(frozen=True)
class CrawlKeys:
    """Every Redis key of one shared crawl.

    The crawl's part is wrapped in a hash tag (``{spider:crawl_id}``) so that on Redis Cluster all
    keys land in one slot and the scripts in :mod:`crawler.redis_scripts` may touch them
    together.
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
    def alive(self) -> str:
        """The crawl's token, set by the first worker to join. Every step that hands out work or
        reports on the crawl checks it: if it is gone or another, Redis lost the crawl's data
        (restarted without persistence, flushed, expired) and with it the frontier."""
        return f"{self.base}:alive"

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
            self.alive,
            self.finished,
        ]
