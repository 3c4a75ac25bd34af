"""One spider per way a crawl can end, as seen from the node that runs it.

- ``ok``: a few items, then ``finish_reason: finished`` and exit 0.
- ``callback_error``: an exception in a callback; Scrapy logs it and still exits 0.
- ``init_error``: an exception in ``__init__``; the process exits 1 before any stats.
- ``hang``: never finishes by itself, but keeps the reactor free so a cancel still works.
- ``sleepy``: finishes normally after ``seconds``; long enough to be killed in between.

Requests are ``data:`` URLs unless a ``url`` argument is given, so nothing touches the network.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import scrapy
from scrapy.http import Response


def data_url(text: str) -> str:
    return "data:text/plain," + quote(text)


class OkSpider(scrapy.Spider):
    """Yields one item per page: ``count`` data: pages, or the single page at ``url``."""

    name = "ok"

    def __init__(self, count: str = "3", url: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = int(count)
        self.url = url

    async def start(self) -> AsyncIterator[Any]:
        urls = [self.url] if self.url else [data_url(f"page-{n}") for n in range(self.count)]
        for url in urls:
            yield scrapy.Request(url, callback=self.parse)

    def parse(self, response: Response, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield {"url": response.url, "length": len(response.body)}


class CallbackErrorSpider(scrapy.Spider):
    """Raises in its callback: an error Scrapy survives, so the exit code alone says 'fine'."""

    name = "callback_error"

    async def start(self) -> AsyncIterator[Any]:
        yield scrapy.Request(data_url("boom"), callback=self.parse)

    def parse(self, response: Response, **kwargs: Any) -> Any:
        raise RuntimeError("callback_error: deliberate failure in a callback")


class InitErrorSpider(scrapy.Spider):
    """Raises while being constructed: the crawl process exits 1 and writes no stats."""

    name = "init_error"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("init_error: deliberate failure in __init__")

    async def start(self) -> AsyncIterator[Any]:  # pragma: no cover - never reached
        return
        yield


#: Logged by ``hang`` once the reactor runs (tests wait for it as ``HANG_READY``). "Spider
#: opened" can come before Scrapy installs its signal handlers, and a signal in that gap ends
#: the crawl without a stats dump.
HANG_READY = "hang: running, waiting to be stopped"


class HangSpider(scrapy.Spider):
    """Never finishes: its start() sleeps forever without blocking the reactor."""

    name = "hang"

    async def start(self) -> AsyncIterator[Any]:
        await asyncio.sleep(0.2)
        self.logger.info(HANG_READY)
        while True:
            await asyncio.sleep(0.5)
        yield  # pragma: no cover - makes this an async generator


class SleepySpider(scrapy.Spider):
    """Sleeps ``seconds`` (default 30) without blocking the reactor, then yields one item."""

    name = "sleepy"

    def __init__(self, seconds: str = "30", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = float(seconds)

    async def start(self) -> AsyncIterator[Any]:
        await asyncio.sleep(self.seconds)
        yield {"slept": self.seconds}
