"""StatsBuffer: per-item counts held in memory reach the stats whenever they are about to be read."""

from __future__ import annotations

from scrapy import signals
from scrapy.utils.test import get_crawler

from crawler.statsbuffer import StatsBuffer, send_stats_snapshot


def buffered():
    crawler = get_crawler(settings_dict={"CRAWLFLEET_STATS_FLUSH_INTERVAL": 0})
    crawler.stats.open_spider()
    return crawler, StatsBuffer(crawler)


def test_counts_wait_in_memory_until_a_snapshot_is_asked_for():
    crawler, counters = buffered()
    counters.inc("a")
    counters.inc("a", 2)
    counters.inc("zero", 0)
    assert crawler.stats.get_value("a") is None
    send_stats_snapshot(crawler)
    assert crawler.stats.get_value("a") == 3
    assert crawler.stats.get_value("zero") == 0  # present at 0, as inc_value(key, 0) makes it
    assert counters.pending == {}


def test_flushes_add_to_what_the_stats_already_hold():
    crawler, counters = buffered()
    crawler.stats.inc_value("a", 10)
    counters.inc("a")
    send_stats_snapshot(crawler)
    counters.inc("a")
    send_stats_snapshot(crawler)
    send_stats_snapshot(crawler)  # nothing pending: nothing added twice
    assert crawler.stats.get_value("a") == 12


def test_every_buffer_of_the_crawl_answers_the_snapshot():
    crawler, first = buffered()
    second = StatsBuffer(crawler)
    first.inc("one")
    second.inc("two", 5)
    send_stats_snapshot(crawler)
    assert (crawler.stats.get_value("one"), crawler.stats.get_value("two")) == (1, 5)


def test_the_spider_closing_writes_what_is_left():
    crawler, counters = buffered()
    counters.inc("left", 4)
    crawler.signals.send_catch_log(signal=signals.spider_closed, spider=None, reason="finished")
    assert crawler.stats.get_value("left") == 4


def test_the_components_of_one_crawler_share_one_buffer():
    crawler = get_crawler(settings_dict={"CRAWLFLEET_STATS_FLUSH_INTERVAL": 0})
    other = get_crawler(settings_dict={"CRAWLFLEET_STATS_FLUSH_INTERVAL": 0})
    crawler.stats.open_spider()
    shared = StatsBuffer.of(crawler)
    assert StatsBuffer.of(crawler) is shared
    assert StatsBuffer.of(other) is not shared
    StatsBuffer.of(crawler).inc("a")
    shared.inc("a")
    send_stats_snapshot(crawler)
    assert crawler.stats.get_value("a") == 2
