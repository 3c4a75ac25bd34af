"""A Scrapy extension for benchmarks: the process's CPU time between spider open and close.

Loaded by ``bench/crawl_overhead.py`` on both sides of the comparison, so that CPU per page is
measured over the same span as Scrapy's ``elapsed_time_seconds`` (start-up and imports excluded).
``time.process_time`` counts every thread of the process: the Kafka producer's I/O thread and the
report extension's HTTP threads are part of the crawl's cost.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from scrapy import signals

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

STAT = "bench/cpu_seconds"


class CpuMeter:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.started = 0.0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CpuMeter:
        meter = cls(crawler)
        crawler.signals.connect(meter.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(meter.spider_closed, signal=signals.spider_closed)
        return meter

    def spider_opened(self) -> None:
        self.started = time.process_time()

    def spider_closed(self) -> None:
        assert self.crawler.stats is not None
        self.crawler.stats.set_value(STAT, time.process_time() - self.started)
