"""Validation and cleaning of typed items before they reach any sink."""

from __future__ import annotations

import pytest
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler

from crawler.items import BookItem
from crawler.pipelines.validation import ValidationPipeline


@pytest.fixture
def pipeline() -> ValidationPipeline:
    crawler = get_crawler()
    crawler.stats.open_spider()
    return ValidationPipeline.from_crawler(crawler)


def test_fields_are_coerced_to_their_declared_types(pipeline):
    item = BookItem(
        upc=" abc ", title=" A title\n", price="1,234.50", url="http://x/1", rating="4", stock=""
    )
    cleaned = pipeline.process_item(item)
    assert cleaned.upc == "abc"
    assert cleaned.title == "A title"
    assert cleaned.price == 1234.5
    assert cleaned.rating == 4
    assert cleaned.stock is None


def test_an_item_missing_a_required_field_is_dropped_and_counted(pipeline):
    with pytest.raises(DropItem, match="required field 'upc' is empty"):
        pipeline.process_item(BookItem(upc="", title="t", price="1", url="http://x/1"))
    assert pipeline.stats.get_value("crawlfleet/items_invalid") == 1


def test_a_malformed_number_is_dropped_with_the_field_named(pipeline):
    with pytest.raises(DropItem, match="field 'price': 'free' is not a float"):
        pipeline.process_item(BookItem(upc="u", title="t", price="free", url="http://x/1"))


def test_plain_dict_items_pass_through(pipeline):
    assert pipeline.process_item({"anything": 1}) == {"anything": 1}
