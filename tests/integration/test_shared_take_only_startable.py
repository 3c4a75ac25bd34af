"""A shared-crawl worker whose downloader is full leaves the shared queue to the others.

Two schedulers (two workers) on one real Redis; each worker's downloader is a stand-in holding
real Scrapy download slots, so the test sets exactly how full it is.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import redis
import scrapy
from scrapy.core.downloader import Slot
from scrapy.utils.test import get_crawler

from crawler.redis_coordination import SharedCrawl
from crawler.redis_keys import CrawlKeys
from crawler.redis_scheduler import SharedScheduler, downloader_can_start
from crawler.shared_settings import REQUIRED_SETTINGS

KEYS = CrawlKeys.build("test", "startable", "unit")


class Health:
    """RedisHealth's interface, always up."""

    def ok(self) -> None:
        pass

    def failed(self, exc: Exception, doing: str) -> None:
        raise AssertionError(f"Redis failed {doing}: {exc}")


def downloader(*slots: tuple[int, int], queued: int = 0, in_transit: int = 0) -> Any:
    """A downloader with one slot per (concurrency, active requests); ``queued`` of the first
    slot's active requests wait in its queue; ``in_transit`` more are taken but in no slot yet."""
    made: dict[str, Slot] = {}
    active: set[scrapy.Request] = set()
    for number, (concurrency, busy) in enumerate(slots):
        slot = Slot(concurrency, 0.0, 0.0)
        for index in range(busy):
            request = scrapy.Request(f"http://site{number}.test/{index}")
            slot.active.add(request)
            if number == 0 and index < queued:
                slot.queue.append((request, None))  # type: ignore[arg-type]
            active.add(request)
        made[f"site{number}.test"] = slot
    active.update(scrapy.Request(f"http://new.test/{index}") for index in range(in_transit))
    return SimpleNamespace(active=active, slots=made)


def worker(redis_url: str, name: str, **settings: Any) -> tuple[SharedScheduler, Any]:
    """An open scheduler of the shared crawl, and its crawler (whose engine the test sets)."""
    crawler = get_crawler(
        scrapy.Spider,
        {
            **REQUIRED_SETTINGS,
            "REDIS_URL": redis_url,
            "SCHEDULER_QUEUE_KEY": KEYS.requests,
            "SCHEDULER_DUPEFILTER_KEY": KEYS.dupefilter,
            **settings,
        },
    )
    spider = scrapy.Spider(name="startable")
    spider.settings = crawler.settings
    spider.shared = SharedCrawl(redis.Redis.from_url(redis_url), KEYS, name, worker_timeout=5)
    spider.shared.join()
    spider.redis_health = Health()
    scheduler = SharedScheduler.from_crawler(crawler)
    scheduler.open(spider)
    crawler.engine = SimpleNamespace(downloader=downloader())
    return scheduler, crawler


def queued(redis_url: str) -> int:
    return int(redis.Redis.from_url(redis_url).zcard(KEYS.requests))


def test_a_full_downloader_leaves_the_requests_in_redis_for_another_worker(
    redis_url: str,
) -> None:
    busy, busy_crawler = worker(redis_url, "busy")
    free, _ = worker(redis_url, "free")
    for index in range(3):
        assert busy.enqueue_request(scrapy.Request(f"http://site0.test/page-{index}"))
    busy_crawler.engine.downloader = downloader((2, 2))

    assert busy.next_request() is None
    assert queued(redis_url) == 3
    assert busy.has_pending_requests()  # declining is not running dry
    assert busy.stats.get_value("crawlfleet/shared/pops_declined") == 1

    taken = free.next_request()
    assert taken is not None
    assert queued(redis_url) == 2

    busy_crawler.engine.downloader = downloader((2, 1))  # one download finished
    assert busy.next_request() is not None
    assert queued(redis_url) == 1


def test_the_setting_off_takes_whatever_the_engine_asks_for(redis_url: str) -> None:
    scheduler, crawler = worker(redis_url, "greedy", SHARED_TAKE_ONLY_STARTABLE=False)
    scheduler.enqueue_request(scrapy.Request("http://site0.test/page"))
    crawler.engine.downloader = downloader((2, 2))
    assert scheduler.next_request() is not None


def test_what_the_downloader_can_start() -> None:
    assert downloader_can_start(downloader())  # nothing in flight: always
    assert not downloader_can_start(downloader(in_transit=1))  # its first, not in a slot yet
    assert downloader_can_start(downloader((8, 7)))
    assert not downloader_can_start(downloader((8, 7), in_transit=1))
    assert not downloader_can_start(downloader((8, 8)))
    assert downloader_can_start(downloader((8, 8), (8, 0)))  # another site's slot is free
    assert not downloader_can_start(downloader((8, 2), queued=1))  # waiting for a delay
