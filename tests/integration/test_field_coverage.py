"""Real ``scrapy crawl books`` runs against the demo site, set up to break a monitor's rule, and the
stats they report: field coverage, the share of 403 answers, a crawl that stalls.

One site serves the module; each test sets its knobs with ``dataclasses.replace`` and the site is
put back (config and counters) after every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from demo.bookshop import DemoServer, SiteConfig, start_in_thread
from tests.fixtures.reportsink import ReportSink

BOOKS = 100  # 5 list pages; page 4 links one missing book
BOOK_FIELDS = ("upc", "title", "price", "url", "rating", "stock", "currency", "crawled_at")


@pytest.fixture(scope="module")
def shop() -> Iterator[DemoServer]:
    server = start_in_thread(SiteConfig(books=BOOKS))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def site(shop: DemoServer) -> Iterator[DemoServer]:
    yield shop
    shop.config = SiteConfig(books=BOOKS)
    shop.reset_counters()


@pytest.fixture
def sink() -> Iterator[ReportSink]:
    with ReportSink() as sink:
        yield sink


def crawl_books(run_crawl, site: DemoServer, sink: ReportSink, **settings: str):
    result = run_crawl(
        "books",
        args={"start_url": f"{site.base_url}/catalogue/page-1.html"},
        settings={**sink.settings(), **settings},
        timeout=60,
    )
    assert result.returncode == 0, result.output
    return result


def coverage(stats: dict) -> dict[str, int]:
    prefix = "crawlfleet/fields/"
    return {k.removeprefix(prefix): v for k, v in stats.items() if k.startswith(prefix)}


def test_a_blank_optional_field_shows_zero_coverage(run_crawl, site, sink):
    site.config = replace(site.config, blank_fields=frozenset({"rating"}))
    crawl_books(run_crawl, site, sink)

    stats = sink.final_stats()
    assert stats["item_scraped_count"] == BOOKS
    assert stats["crawlfleet/fields_seen"] == BOOKS
    assert coverage(stats) == {name: 0 if name == "rating" else BOOKS for name in BOOK_FIELDS}
    assert "crawlfleet/fields_untracked" not in stats
    assert "crawlfleet/items_invalid" not in stats


def test_a_blank_required_field_drops_every_item(run_crawl, site, sink):
    site.config = replace(site.config, blank_fields=frozenset({"price"}))
    crawl_books(run_crawl, site, sink)

    stats = sink.final_stats()
    assert stats["crawlfleet/items_invalid"] == BOOKS
    assert stats.get("item_scraped_count", 0) == 0
    assert coverage(stats) == {}


def test_forbidden_share_answers_403_for_that_share_of_detail_pages(run_crawl, site, sink):
    site.config = replace(site.config, forbidden_share=0.2)
    forbidden = site.config.forbidden_books()
    assert len(forbidden) == 20
    crawl_books(run_crawl, site, sink)

    stats = sink.final_stats()
    # robots.txt, 5 list pages, 100 detail pages and 1 missing book; a 403 is not retried.
    assert stats["downloader/response_count"] == 1 + 5 + BOOKS + 1
    assert stats["downloader/response_status_count/403"] == 20
    assert stats["downloader/response_status_count/404"] == 1
    assert stats["item_scraped_count"] == BOOKS - 20
    hits = site.hits.snapshot()
    assert all(hits[f"/catalogue/book-{n}.html"] == 1 for n in forbidden)


def test_a_stalled_site_keeps_the_crawl_alive_without_growth(run_crawl, site, sink):
    site.config = replace(site.config, stall_after=30, stall_seconds=120)
    # Closing waits for requests in flight: a short download timeout keeps that wait short.
    crawl_books(run_crawl, site, sink, CLOSESPIDER_TIMEOUT="2", DOWNLOAD_TIMEOUT="2")

    stats = sink.final_stats()
    assert stats["finish_reason"] == "closespider_timeout"
    assert stats["item_scraped_count"] == 30
    assert stats["crawlfleet/fields_seen"] == 30
    # The heartbeats carry the coverage too, and show the crawl alive but no longer growing.
    stalled = [
        beat["stats"]
        for beat in sink.events("heartbeat")
        if beat["stats"].get("item_scraped_count") == 30
    ]
    assert len(stalled) >= 2, sink.events("heartbeat")
    assert {beat["response_received_count"] for beat in stalled} == {
        stats["response_received_count"]
    }
    assert all(beat["crawlfleet/fields/upc"] == 30 for beat in stalled)
    # Counted in memory, written in before each report: every heartbeat is current (it may
    # count an item whose item_scraped signal has not run yet).
    for beat in sink.events("heartbeat"):
        beat_stats = beat["stats"]
        scraped = beat_stats.get("item_scraped_count", 0)
        seen = beat_stats.get("crawlfleet/fields_seen", 0)
        assert scraped <= seen <= scraped + 100, beat_stats
        assert beat_stats.get("useragent/rotated", 0) >= beat_stats.get(
            "response_received_count", 0
        )
    assert site.details_served == 30


def test_a_spider_with_its_own_pipelines_keeps_field_coverage(run_crawl, site, sink):
    """Coverage sits in ITEM_PIPELINES_BASE: replacing the project's pipelines keeps it."""
    site.config = replace(site.config, blank_fields=frozenset({"price"}))
    crawl_books(run_crawl, site, sink, ITEM_PIPELINES="{}")

    stats = sink.final_stats()
    # Validation is gone with the project's pipelines, so items without a price pass ...
    assert "crawlfleet/items_invalid" not in stats
    assert stats["item_scraped_count"] == BOOKS
    # ... and coverage still counts them, and sees the empty field.
    assert stats["crawlfleet/fields_seen"] == BOOKS
    assert coverage(stats)["upc"] == BOOKS
    assert coverage(stats)["price"] == 0
