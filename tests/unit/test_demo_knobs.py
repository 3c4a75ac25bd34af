"""The demo site's knobs for breaking monitors: which books are forbidden, what a blank field does
to the books spider's item, and a stall that holds requests yet never holds up a shutdown."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from scrapy.http import HtmlResponse

from crawler.pipelines.validation import InvalidItem, clean_dataclass
from crawler.spiders.books import parse_book
from demo.bookshop import SiteConfig, start_in_thread
from demo.catalogue import Book, detail_html
from tests.fixtures.common import wait_until


def status_of(url: str, timeout: float = 5) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError) as exc:
        return type(exc).__name__


def parsed(number: int, blank: set[str]):
    url = f"http://shop.test/catalogue/book-{number}.html"
    body = detail_html(Book(number), frozenset(blank))
    return clean_dataclass(parse_book(HtmlResponse(url, body=body, encoding="utf-8")))


@pytest.mark.parametrize(
    ("share", "expected"), [(0.0, 0), (0.07, 7), (0.2, 20), (0.155, 16), (1.0, 100)]
)
def test_every_hundred_books_hold_the_share_of_forbidden_ones(share, expected):
    config = SiteConfig(books=300, forbidden_share=share)
    for first in (1, 101, 201):
        assert sum(config.is_forbidden(n) for n in range(first, first + 100)) == expected


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="cannot blank author"):
        SiteConfig(blank_fields=frozenset({"author"}))
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        SiteConfig(forbidden_share=1.5)
    with pytest.raises(ValueError, match="negative"):
        replace(SiteConfig(), stall_after=-1)


def test_blank_optional_fields_arrive_as_none():
    item = parsed(7, {"rating", "stock"})
    assert item.rating is None
    assert item.stock is None
    assert item.upc == Book(7).upc
    assert item.price == float(Book(7).price)


@pytest.mark.parametrize("field", ["title", "price", "upc"])
def test_a_blank_required_field_makes_the_item_invalid(field):
    with pytest.raises(InvalidItem, match=f"required field '{field}' is empty"):
        parsed(7, {field})


def test_a_stall_holds_requests_until_reset_and_never_blocks_shutdown():
    server = start_in_thread(SiteConfig(books=10, stall_after=2, stall_seconds=60))
    base = server.base_url
    try:
        assert [status_of(f"{base}/catalogue/book-{n}.html") for n in (1, 2)] == [200, 200]
        assert status_of(f"{base}/catalogue/book-3.html", timeout=0.5) == "TimeoutError"
        assert status_of(f"{base}/catalogue/page-1.html", timeout=0.5) == "TimeoutError"
        server.reset_counters()
        assert status_of(f"{base}/catalogue/book-3.html") == 200
        server.config = replace(server.config, stall_after=0)
        assert status_of(f"{base}/catalogue/book-4.html") == 200

        server.config = replace(server.config, stall_after=1)
        outcome: list[int | str] = []
        waiting = threading.Thread(target=lambda: outcome.append(status_of(f"{base}/robots.txt")))
        waiting.start()
        wait_until(lambda: server.hits.snapshot().get("/robots.txt"), 5, "stalled request")
        assert not outcome
    finally:
        server.shutdown()
        server.server_close()
    waiting.join(10)  # released by the shutdown, long before the stall's 60 s
    assert not waiting.is_alive()
    assert outcome
    assert outcome[0] != 200


def test_after_stall_seconds_a_hanging_request_gets_503():
    server = start_in_thread(SiteConfig(books=10, stall_after=1, stall_seconds=0.2))
    try:
        assert status_of(f"{server.base_url}/catalogue/book-1.html") == 200
        assert status_of(f"{server.base_url}/catalogue/book-2.html") == 503
    finally:
        server.shutdown()
        server.server_close()
