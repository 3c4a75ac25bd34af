"""Per-item counters kept in memory and written into ``crawler.stats`` in batches.

Every call on Scrapy's stats collector goes through a deprecation wrapper and costs a few
microseconds; a component counting several things per item or per request would spend more on
its counters than on its work. Such components count in a ``StatsBuffer`` instead, and the buffer
adds its counts to the stats whenever someone is about to read them:

- on ``stats_snapshot``, which the report extension sends before it reads the stats for a
  heartbeat or the final report (send it too from any other component that reads the stats);
- on ``spider_closed``, before Scrapy dumps the stats;
- every ``CRAWLFLEET_STATS_FLUSH_INTERVAL`` seconds while the spider runs (0: never), for readers
  that send no signal, such as Scrapy's periodic log.

Counts only ever add up: a flushed count is never lost, and a count not yet flushed is in
``pending``. Components share one buffer per crawler (:meth:`StatsBuffer.of`), so a crawl has one
flush timer however many of them count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

# Sent (with ``crawler.signals.send_catch_log``) right before the stats are read for a report.
stats_snapshot = object()

DEFAULT_FLUSH_INTERVAL = 5.0


class StatsBuffer:
    _shared: WeakKeyDictionary[Crawler, StatsBuffer] = WeakKeyDictionary()

    @classmethod
    def of(cls, crawler: Crawler) -> StatsBuffer:
        """The crawler's own buffer, made on first use and shared by all its components."""
        buffer = cls._shared.get(crawler)
        if buffer is None:
            buffer = cls._shared[crawler] = cls(crawler)
        return buffer

    def __init__(self, crawler: Crawler) -> None:
        assert crawler.stats is not None
        self.stats = crawler.stats
        self.pending: dict[str, int] = {}
        self.interval = crawler.settings.getfloat(
            "CRAWLFLEET_STATS_FLUSH_INTERVAL", DEFAULT_FLUSH_INTERVAL
        )
        self._timer: Any = None
        crawler.signals.connect(self.flush, signal=stats_snapshot)
        crawler.signals.connect(self._start, signal=signals.spider_opened)
        crawler.signals.connect(self._stop, signal=signals.spider_closed)

    def inc(self, key: str, count: int = 1) -> None:
        """Like ``stats.inc_value``; ``count=0`` makes the key appear at 0 on the next flush."""
        pending = self.pending
        pending[key] = pending.get(key, 0) + count

    def flush(self) -> None:
        """Add every pending count to the stats."""
        pending, self.pending = self.pending, {}
        inc = self.stats.inc_value
        for key, count in pending.items():
            inc(key, count)

    def _start(self) -> None:
        if self.interval > 0:
            self._timer = create_looping_call(self.flush)
            self._timer.start(self.interval, now=False)

    def _stop(self) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        self.flush()


def send_stats_snapshot(crawler: Crawler) -> None:
    """Have every buffered counter written into the stats, before reading them."""
    crawler.signals.send_catch_log(signal=stats_snapshot)
