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
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
import scrapy
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, DontCloseSpider
from scrapy.settings import SETTINGS_PRIORITIES, BaseSettings
from scrapy.utils.asyncio import AsyncioLoopingCall, create_looping_call
from scrapy_redis.spiders import RedisMixin
from twisted.internet.task import LoopingCall

from crawler.redis_coordination import SeedOutcome, SharedCrawl, new_worker_id
from crawler.redis_keys import CrawlKeys, crawl_id_argument
from crawler.redis_support import SharedCrawlError, connect
from crawler.sharedkeys import DEFAULT_KEY_PREFIX
from crawler.spiders.base import Arg, BaseSpider, url_argument

logger = logging.getLogger(__name__)

# Settings a shared crawl cannot work without. They win over ``-s`` (with a warning) because any
# other value silently breaks the crawl: PERSIST=False lets the first worker to finish wipe the
# shared queue, the stock dupefilter crashes under the scrapy-redis scheduler, and the stock queue
# class doesn't mark a worker busy when it takes a request.
REQUIRED_SETTINGS: dict[str, Any] = {
    "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
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
_ENFORCED_PRIORITY = SETTINGS_PRIORITIES["cmdline"] + 1


def _enforce(settings: BaseSettings, name: str, value: Any) -> None:
    """Pin ``name`` to ``value`` above every user priority; warn if that overrides their value."""
    current = settings.get(name)
    explicit = (settings.getpriority(name) or 0) > SETTINGS_PRIORITIES["default"]
    if explicit and current not in (None, value):
        logger.warning("ignoring %s=%r: shared crawls need %r", name, current, value)
    settings.set(name, value, priority=_ENFORCED_PRIORITY)


@dataclass(frozen=True)
class SharedTiming:
    """How often a worker looks at Redis, proves it is alive, and how long it waits."""

    idle_tick: float
    heartbeat_interval: float
    worker_timeout: float
    max_idle_time: float
    key_ttl: int
    done_marker_ttl: int

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
        if min(timing.max_idle_time, timing.key_ttl, timing.done_marker_ttl) < 0:
            raise SharedCrawlError(
                "SHARED_MAX_IDLE_TIME, SHARED_KEY_TTL and SHARED_DONE_MARKER_TTL must be >= 0"
            )
        return timing


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
    _heartbeat: AsyncioLoopingCall | LoopingCall
    _idle_since: float | None

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        for name, value in REQUIRED_SETTINGS.items():
            _enforce(settings, name, value)

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
        _enforce(settings, "SCHEDULER_QUEUE_KEY", keys.requests)
        _enforce(settings, "SCHEDULER_DUPEFILTER_KEY", keys.dupefilter)
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
        except redis.RedisError as exc:
            logger.warning("shared crawl %r: heartbeat failed: %s", self.crawl_id, exc)

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
        found = self.shared.pop_start_urls(batch_size, redis_key)
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
        try:
            status = self.shared.mark_idle()
        except redis.RedisError as exc:
            logger.error("shared crawl %r: lost Redis: %s", self.crawl_id, exc)
            raise CloseSpider("shared_redis_error") from None
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
        if outcome.deleted:
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
