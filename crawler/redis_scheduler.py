"""The scheduler of a shared crawl: scrapy-redis' own, holding what it cannot queue while Redis is
away instead of dropping it.

scrapy-redis queues a request in two calls, the duplicate filter's ``SADD`` and the queue's
``ZADD``. If Redis is unreachable for either, its scheduler raises, Scrapy logs the error and the
request is gone: a page parsed during a two-second Redis restart loses every link on it, and the
crawl then finishes "finished" with pages missing. :class:`SharedScheduler` keeps such requests
in memory, in order, remembering whether each already passed the duplicate filter (its ``SADD``
answered, so asking again would call it a duplicate), and queues them when Redis answers again,
before taking any new work. While it holds requests the crawl is not idle. If the worker stops
first (``SHARED_REDIS_DOWN_TIMEOUT``), the ones still held are an ERROR and a stat.

A worker also takes from the shared queue only what its downloader can start now
(``SHARED_TAKE_ONLY_STARTABLE``, on by default). Scrapy's engine pulls requests until
``CONCURRENT_REQUESTS`` are in its downloader, but a one-site crawl runs only
``CONCURRENT_REQUESTS_PER_DOMAIN`` of them: the rest would wait in this worker's download slot
while another worker idles, and the next list page with them. Declining is never mistaken for an
idle worker: it happens only while this worker's downloader has requests in flight, so the engine
is not idle, and each of them finishing makes the engine ask again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import redis
from scrapy_redis.scheduler import Scheduler

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.core.downloader import Downloader
    from scrapy.crawler import Crawler

    from crawler.redis_support import RedisHealth

logger = logging.getLogger(__name__)


class SharedScheduler(Scheduler):
    """scrapy-redis' scheduler that holds the requests Redis could not take, and queues them later,
    and takes only the requests its downloader can start."""

    crawler: Crawler | None = None
    take_only_startable: bool = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SharedScheduler:
        instance = super().from_crawler(crawler)
        instance.crawler = crawler
        instance.take_only_startable = crawler.settings.getbool("SHARED_TAKE_ONLY_STARTABLE", True)
        return instance

    def open(self, spider: Spider) -> None:
        super().open(spider)
        # (request, already through the duplicate filter), oldest first
        self.held: list[tuple[Request, bool]] = []

    @property
    def health(self) -> RedisHealth | None:
        return getattr(self.spider, "redis_health", None)

    def enqueue_request(self, request: Request) -> bool:
        if self.health is None:  # not a shared spider
            return super().enqueue_request(request)
        if not self.held:  # else Redis was away at the last try: keep the order
            queued, filtered = self._queue(request, filtered=False)
            if queued is not None:
                return queued
        else:
            filtered = False
        self.held.append((request, filtered))
        if self.stats:
            self.stats.inc_value("crawlfleet/shared/requests_held")
        return True

    def _queue(self, request: Request, *, filtered: bool) -> tuple[bool | None, bool]:
        """(True if queued, False if a duplicate, None if Redis failed; whether it has passed the
        duplicate filter by now)."""
        health = self.health
        assert health is not None
        try:
            if not filtered and not request.dont_filter and self.df.request_seen(request):
                self.df.log(request, self.spider)
                return False, True
            filtered = True
            self.queue.push(request)
        except redis.RedisError as exc:
            health.failed(exc, "queueing a request")
            return None, filtered
        health.ok()
        if self.stats:
            self.stats.inc_value("scheduler/enqueued/redis")
        return True, True

    def _release_held(self) -> bool:
        """Queue what is held, oldest first; False if Redis failed again (the rest stays held)."""
        while self.held:
            request, filtered = self.held[0]
            queued, filtered = self._queue(request, filtered=filtered)
            if queued is None:
                self.held[0] = (request, filtered)
                return False
            self.held.pop(0)
        return True

    def next_request(self) -> Request | None:
        if self.held and not self._release_held():
            return None
        if self.take_only_startable and not self._downloader_can_start():
            if self.stats:
                self.stats.inc_value("crawlfleet/shared/pops_declined")
            return None
        return super().next_request()

    def _downloader_can_start(self) -> bool:
        """Whether the downloader would start one more request now rather than queue it."""
        engine = getattr(self.crawler, "engine", None)
        downloader: Downloader | None = getattr(engine, "downloader", None)
        if self.health is None or downloader is None:  # not a shared spider
            return True
        return downloader_can_start(downloader)

    def has_pending_requests(self) -> bool:
        return bool(getattr(self, "held", None)) or super().has_pending_requests()

    def close(self, reason: str) -> None:
        held = getattr(self, "held", [])
        if held:
            logger.error(
                "%d request(s) never reached Redis and are lost with this worker (%s); "
                "the first: %s",
                len(held),
                reason,
                held[0][0].url,
            )
            if self.stats:
                self.stats.set_value("crawlfleet/shared/requests_lost", len(held))
        super().close(reason)


def downloader_can_start(downloader: Downloader) -> bool:
    """True unless every request slot this downloader knows of is taken.

    With nothing in flight the answer is always yes (a crawl must start, and a worker that
    declines must have a download whose end makes the engine ask again). Otherwise the free
    places are those of slots that start requests at once (nothing waiting in their queue, e.g.
    for a ``DOWNLOAD_DELAY``) below their concurrency, less the requests the engine handed over
    that have not reached a slot yet (the downloader middlewares run as asyncio tasks, so those
    taken in one engine loop arrive later). A request for a site with no slot yet may thus wait
    for a place to free up; another worker can take it meanwhile.
    """
    in_flight = len(downloader.active)
    if not in_flight:
        return True
    slots = list(downloader.slots.values())
    in_slots = sum(len(slot.active) for slot in slots)
    free = sum(max(0, slot.concurrency - len(slot.active)) for slot in slots if not slot.queue)
    return free > max(0, in_flight - in_slots)
