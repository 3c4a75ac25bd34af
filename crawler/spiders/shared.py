"""SharedSpider: one crawl fanned out over several worker processes through Redis.

Start K workers with the same arguments and the same ``crawl_id``; they share one request queue and
one duplicate filter (scrapy-redis), so every URL is fetched once between them. The first worker
seeds the start URLs, idle workers pick up whatever the busy ones enqueue, everybody exits when the
crawl is done, and the last one out deletes the crawl's keys. The coordination itself lives in
:mod:`crawler.redis_coordination`.

Only spiders built on this class use the Redis scheduler: its settings are applied in
``update_settings``/``from_crawler``, never in the project's settings module.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import redis
import scrapy
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, DontCloseSpider
from scrapy.settings import BaseSettings
from scrapy.utils.asyncio import AsyncioLoopingCall, create_looping_call
from scrapy.utils.defer import deferred_from_coro
from scrapy_redis.spiders import RedisMixin
from twisted.internet.task import LoopingCall

from crawler.redis_coordination import FrontierLost, SeedOutcome, SharedCrawl, new_worker_id
from crawler.redis_keys import CrawlKeys, crawl_id_argument
from crawler.redis_support import RedisHealth, SharedCrawlError, connect
from crawler.shared_settings import REQUIRED_SETTINGS, SharedTiming, enforce
from crawler.sharedkeys import DEFAULT_KEY_PREFIX
from crawler.spiders.base import Arg, BaseSpider, url_argument

logger = logging.getLogger(__name__)


class SharedSpider(RedisMixin, BaseSpider):
    """A BaseSpider whose requests go through one Redis-backed crawl shared by all its workers.

    Subclasses declare their own arguments on top of ``crawl_id`` and return their seed URLs from
    ``start_urls_from_arguments()``; ``parse`` handles the seed responses. Start URLs may also be
    fed while the crawl runs by pushing plain URLs or JSON ``{"url": ..., "meta": {...}}`` onto
    the crawl's ``start_urls`` list.
    """

    arguments: ClassVar[dict[str, Arg]] = {
        "crawl_id": Arg(
            crawl_id_argument, help="identifies the shared crawl; same for all workers"
        ),
    }
    crawl_id: str
    shared: SharedCrawl
    timing: SharedTiming
    redis_health: RedisHealth
    _heartbeat: AsyncioLoopingCall | LoopingCall
    _idle_since: float | None
    _stopping: str | None = None  # the reason this worker is closing itself with, once it is
    _closing: Any = None  # the Deferred of that close, kept so it is not collected

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        for name, value in REQUIRED_SETTINGS.items():
            enforce(settings, name, value)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> SharedSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        try:
            spider._join_shared_crawl(crawler)
        except SharedCrawlError as exc:
            message = f"cannot start shared crawl of spider {cls.name!r}: {exc}"
            logger.error(message)
            raise SharedCrawlError(message) from None
        return spider

    # --- joining --------------------------------------------------------------------------------

    def _join_shared_crawl(self, crawler: Crawler) -> None:
        """Namespace the scheduler's keys by crawl id, check Redis, register this worker.

        Runs in ``from_crawler``, where Scrapy still lets a spider change the crawler's settings.
        """
        settings = crawler.settings
        self.timing = SharedTiming.from_settings(settings)
        keys = CrawlKeys.build(
            settings.get("SHARED_KEY_PREFIX") or DEFAULT_KEY_PREFIX, self.name, self.crawl_id
        )
        enforce(settings, "SCHEDULER_QUEUE_KEY", keys.requests)
        enforce(settings, "SCHEDULER_DUPEFILTER_KEY", keys.dupefilter)
        self.redis_key = keys.start_urls

        connect(settings).close()  # clear error now rather than a traceback at the first request
        self.setup_redis(crawler)
        assert self.server is not None
        self.shared = SharedCrawl(
            self.server,
            keys,
            new_worker_id(getattr(self, "_job", None)),
            worker_timeout=self.timing.worker_timeout,
            key_ttl=self.timing.key_ttl,
            done_marker_ttl=self.timing.done_marker_ttl,
        )
        try:
            registered = self.shared.join()
        except redis.RedisError as exc:
            raise SharedCrawlError(f"cannot register with Redis: {exc}") from None
        self._idle_since = None
        self.redis_health = RedisHealth(
            self.crawl_id,
            crawler,
            give_up_after=self.timing.redis_down_timeout,
            give_up=lambda: self._stop("shared_redis_error"),
        )
        # Heartbeat from now on, not from spider_opened: middlewares and pipelines can take
        # seconds to start, and a registered worker that looks dead could be pruned meanwhile.
        self._heartbeat = create_looping_call(self._beat)
        self._heartbeat.start(self.timing.heartbeat_interval, now=False)
        crawler.signals.connect(self._on_spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._on_spider_closed, signal=signals.spider_closed)
        logger.info(
            "joined shared crawl %r as worker %s (%d registered, keys %s:*)",
            self.crawl_id,
            self.shared.worker_id,
            registered,
            keys.base,
        )

    def _on_spider_opened(self, spider: scrapy.Spider) -> None:
        stats = self.crawler.stats
        stats.set_value("crawlfleet/shared/crawl_id", self.crawl_id)
        stats.set_value("crawlfleet/shared/worker_id", self.shared.worker_id)
        self._shorten_idle_tick()

    def _shorten_idle_tick(self) -> None:
        """Make an idle engine look at the shared queue every SHARED_IDLE_TICK seconds.

        An idle Scrapy engine re-checks its scheduler only on a fixed 5 s heartbeat, so a worker
        that ran dry would notice new shared work (or the end of the crawl) up to 5 s late. Scrapy
        has no setting for it; the interval is a class attribute read when the engine starts, so
        an instance attribute set before then overrides it for this crawl only.
        """
        engine = self.crawler.engine
        if isinstance(getattr(type(engine), "_SLOT_HEARTBEAT_INTERVAL", None), int | float):
            engine._SLOT_HEARTBEAT_INTERVAL = self.timing.idle_tick  # type: ignore[misc]
        else:
            logger.warning(
                "this Scrapy has no engine heartbeat to tune: idle workers poll Redis at "
                "Scrapy's own pace, not every SHARED_IDLE_TICK=%ss",
                self.timing.idle_tick,
            )

    def _beat(self) -> None:
        try:
            self.shared.heartbeat()
        except FrontierLost as exc:
            self.frontier_lost(exc)
            return
        except redis.RedisError as exc:
            self.redis_health.failed(exc, "heartbeat failed")
            return
        self.redis_health.ok()

    # --- losing Redis ---------------------------------------------------------------------------

    def frontier_lost(self, exc: FrontierLost) -> None:
        """Redis lost this crawl's data: stop with ``shared_frontier_lost`` rather than finish.

        What was queued and what was seen are gone, so carrying on could only end in a crawl that
        looks complete with pages missing. Logged once, as an ERROR, and the distinct finish
        reason makes the control plane file the job as failed (cause ``shared_frontier_lost``).
        """
        if self._stopping is None:
            logger.error(
                "shared crawl %r: its Redis frontier is gone (%s; Redis restarted without "
                "persistence, was flushed, or the keys expired); the requests it held are lost, so "
                "this worker stops instead of finishing with pages missing. Run the crawl again.",
                self.crawl_id,
                exc,
            )
            self.crawler.stats.set_value("crawlfleet/shared/frontier_lost", True)
        self._stop("shared_frontier_lost")

    def _stop(self, reason: str) -> None:
        """Close the spider with ``reason``, once, from outside a callback."""
        if self._stopping is not None:
            return
        self._stopping = reason
        engine = self.crawler.engine
        if engine is not None:
            self._closing = deferred_from_coro(engine.close_spider_async(reason=reason))

    # --- seeding and start URLs -----------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        """Seed the crawl once per crawl id, then take a first batch of start URLs."""
        urls = list(self.start_urls_from_arguments())
        outcome = self.shared.seed(urls)
        self.crawler.stats.set_value("crawlfleet/shared/seeded", outcome is SeedOutcome.SEEDED)
        self.crawler.stats.set_value("crawlfleet/shared/seed", outcome.value)
        if outcome is SeedOutcome.ALREADY_FINISHED:
            logger.warning(
                "shared crawl %r finished earlier (its done marker is still there): "
                "nothing to do; use a new crawl_id to crawl again",
                self.crawl_id,
            )
            return
        if outcome is SeedOutcome.SEEDED:
            logger.info("seeded shared crawl %r with %d start URL(s)", self.crawl_id, len(urls))
        else:
            logger.info("shared crawl %r already seeded; working from the queue", self.crawl_id)
        for request in self.next_requests():
            yield request

    def pop_list_queue(self, redis_key: str, batch_size: int) -> list[bytes]:
        """RedisMixin's start-URL pop, made atomic with marking this worker busy."""
        try:
            found = self.shared.pop_start_urls(batch_size, redis_key)
        except FrontierLost as exc:
            self.frontier_lost(exc)
            return []
        except redis.RedisError as exc:
            self.redis_health.failed(exc, "taking start URLs")
            return []
        self.redis_health.ok()
        if found:
            self.note_busy()
        return found

    def make_request_from_data(self, data: bytes | str) -> scrapy.Request | list[Any]:
        """A plain URL or JSON ``{"url": ..., "meta": {...}}`` becomes a request for ``parse``.

        Unlike scrapy-redis' default, the request goes through the shared duplicate filter, so a
        URL fed twice is still fetched once.
        """
        text = data.decode(self.redis_encoding or "utf-8") if isinstance(data, bytes) else data
        text = text.strip()
        meta: dict[str, Any] = {}
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
                text = str(parsed.get("url") or "")
                meta = dict(parsed.get("meta") or {})
            except (ValueError, TypeError, AttributeError) as exc:
                logger.warning("ignoring malformed start URL entry %r: %s", text[:200], exc)
                return []
        try:
            url = url_argument(text)
        except ValueError as exc:
            logger.warning("ignoring start URL entry: %s", exc)
            return []
        return scrapy.Request(url, callback=self.parse, meta=meta)

    # --- idling, finishing, leaving -------------------------------------------------------------

    def note_busy(self) -> None:
        """This worker took work from the shared crawl: its idle clock restarts."""
        self._idle_since = None

    def spider_idle(self) -> None:
        """Keep an idle worker open until the whole crawl is done (or it idled too long).

        Connected to ``spider_idle`` by RedisMixin.setup_redis; replaces its time-only rule,
        under which a worker leaves while another may still be producing work for it.
        """
        found = 0
        for request in self.next_requests():
            self.crawler.engine.crawl(request)
            found += 1
        if found:
            raise DontCloseSpider
        if self._stopping is not None:
            raise CloseSpider(self._stopping)
        try:
            status = self.shared.mark_idle()
        except FrontierLost as exc:
            self.frontier_lost(exc)
            raise CloseSpider("shared_frontier_lost") from None
        except redis.RedisError as exc:
            # Not a verdict on the crawl: wait for Redis (RedisHealth stops the worker if it
            # stays away for SHARED_REDIS_DOWN_TIMEOUT).
            self.redis_health.failed(exc, "checking whether the crawl is done")
            raise DontCloseSpider from None
        self.redis_health.ok()
        if status.done:
            logger.info(
                "shared crawl %r is done: queue empty and all %d worker(s) idle",
                self.crawl_id,
                status.workers,
            )
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        idle_for = now - self._idle_since
        if self.timing.max_idle_time and idle_for >= self.timing.max_idle_time:
            logger.warning(
                "leaving shared crawl %r after %.0fs idle; %d of %d worker(s) still busy, "
                "%d request(s) pending",
                self.crawl_id,
                idle_for,
                status.busy,
                status.workers,
                status.pending,
            )
            return
        raise DontCloseSpider

    def _on_spider_closed(self, spider: scrapy.Spider, reason: str) -> None:
        if self._heartbeat.running:
            self._heartbeat.stop()
        finished = reason == "finished"
        try:
            outcome = self.shared.leave(finished=finished)
        except redis.RedisError as exc:
            logger.error("shared crawl %r: could not unregister: %s", self.crawl_id, exc)
            self.crawler.stats.set_value("crawlfleet/shared/cleanup", "error")
            return
        if outcome.deleted and self._stopping == "shared_frontier_lost":
            result = "deleted"
            logger.info(
                "last worker out of lost shared crawl %r: deleted what was left", self.crawl_id
            )
        elif outcome.deleted:
            result = "deleted"
            logger.info(
                "last worker out: deleted every key of shared crawl %r%s",
                self.crawl_id,
                f" (done marker kept for {self.timing.done_marker_ttl}s)"
                if self.timing.done_marker_ttl
                else "",
            )
        elif outcome.remaining_workers:
            result = "left_to_others"
            logger.info(
                "left shared crawl %r; %d worker(s) still registered",
                self.crawl_id,
                outcome.remaining_workers,
            )
        else:
            result = "kept"
            logger.warning(
                "last worker out of unfinished shared crawl %r (%s, %d request(s) pending): "
                "keys kept; start workers with the same crawl_id to resume",
                self.crawl_id,
                reason,
                outcome.pending,
            )
        self.crawler.stats.set_value("crawlfleet/shared/cleanup", result)
        self.crawler.stats.set_value("crawlfleet/shared/pending_at_leave", outcome.pending)
