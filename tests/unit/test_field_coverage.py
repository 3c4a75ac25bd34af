"""Field coverage counting: what counts as filled, which names are tracked, and the cap."""

from __future__ import annotations

import dataclasses

import pytest
import scrapy
from scrapy.exceptions import NotConfigured
from scrapy.utils.test import get_crawler

from crawler.items import BookItem
from crawler.pipelines.coverage import FieldCoveragePipeline, is_filled


class Product(scrapy.Item):
    name = scrapy.Field()
    price = scrapy.Field()
    tags = scrapy.Field()


@dataclasses.dataclass
class Pair:
    left: object = None
    right: object = None


def coverage_for(**settings: object) -> FieldCoveragePipeline:
    crawler = get_crawler(settings_dict=settings)
    crawler.stats.open_spider()
    return FieldCoveragePipeline.from_crawler(crawler)


def field_stats(coverage: FieldCoveragePipeline) -> dict[str, int]:
    coverage.counters.flush()
    return {
        key: value
        for key, value in coverage.counters.stats.get_stats().items()
        if key.startswith("crawlfleet/field")
    }


@pytest.mark.parametrize(
    "value", [None, "", "   \n", [], (), {}, set(), frozenset(), b""], ids=repr
)
def test_empty_values_do_not_count(value):
    assert not is_filled(value)


@pytest.mark.parametrize("value", [0, 0.0, False, "x", [None], {"a": None}, b"x"], ids=repr)
def test_zero_false_and_non_empty_values_count(value):
    assert is_filled(value)


def test_dict_items_count_every_key_and_keep_unfilled_fields_at_zero():
    coverage = coverage_for()
    coverage.count({"title": "A", "price": 0, "rating": None})
    coverage.count({"title": "", "price": 3.5, "tags": []})
    assert field_stats(coverage) == {
        "crawlfleet/fields_seen": 2,
        "crawlfleet/fields/title": 1,
        "crawlfleet/fields/price": 2,
        "crawlfleet/fields/rating": 0,
        "crawlfleet/fields/tags": 0,
    }


def test_declared_fields_are_tracked_even_when_never_set():
    coverage = coverage_for()
    coverage.count(Product(name="n", tags=["a"]))
    coverage.count(Product(name="m", price=False))
    assert field_stats(coverage) == {
        "crawlfleet/fields_seen": 2,
        "crawlfleet/fields/name": 2,
        "crawlfleet/fields/price": 1,
        "crawlfleet/fields/tags": 1,
    }


def test_dataclass_items_count_their_fields():
    coverage = coverage_for()
    coverage.count(BookItem(upc="u", title="t", price=1.0, url="http://x/1", rating=None))
    coverage.count(Pair(left=0))
    stats = field_stats(coverage)
    assert stats["crawlfleet/fields_seen"] == 2
    assert stats["crawlfleet/fields/upc"] == 1
    assert stats["crawlfleet/fields/rating"] == 0
    assert stats["crawlfleet/fields/currency"] == 1  # a default is a value
    assert stats["crawlfleet/fields/left"] == 1
    assert stats["crawlfleet/fields/right"] == 0


def test_the_cap_bounds_tracked_names_and_counts_the_rest():
    coverage = coverage_for(CRAWLFLEET_FIELD_COVERAGE_MAX_FIELDS=2)
    coverage.count({"a": 1, "b": 2})
    coverage.count({"a": 1, "c": 3, "d": 4})
    coverage.count({f"key{n}": n for n in range(50)})
    stats = field_stats(coverage)
    assert stats == {
        "crawlfleet/fields_seen": 3,
        "crawlfleet/fields/a": 2,
        "crawlfleet/fields/b": 1,
        "crawlfleet/fields_untracked": 2 + 50,
    }


def test_without_overflow_there_is_no_untracked_count():
    coverage = coverage_for()
    coverage.count({f"key{n}": n for n in range(100)})
    stats = field_stats(coverage)
    assert "crawlfleet/fields_untracked" not in stats
    assert len(stats) == 101


def test_non_string_keys_become_names():
    coverage = coverage_for()
    coverage.count({1: "x"})
    assert field_stats(coverage)["crawlfleet/fields/1"] == 1


def test_the_pipeline_can_be_turned_off():
    crawler = get_crawler(settings_dict={"CRAWLFLEET_FIELD_COVERAGE_ENABLED": False})
    with pytest.raises(NotConfigured):
        FieldCoveragePipeline.from_crawler(crawler)
