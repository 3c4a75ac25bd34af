"""The sinks' fast path: the same rows and messages as ItemAdapter and csv.DictWriter give."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json

import pytest
import scrapy
from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler

from crawler.items import BookItem, encode_item, item_fields
from crawler.kafkaclient import parse_count, parse_seconds
from crawler.pipelines.csv import CsvPipeline


class Product(scrapy.Item):
    name = scrapy.Field()
    tags = scrapy.Field()


@dataclasses.dataclass
class Nested:
    book: BookItem
    tags: list[str] = dataclasses.field(default_factory=list)
    note: object = None


class Text(str):
    """A str subclass: not a plain value, so it takes ItemAdapter's path."""


BOOK = BookItem(upc="u1", title="Tide", price=12.5, url="http://x/1", rating=None, stock=3)

ITEMS = [
    BOOK,
    BookItem(upc="u2", title=Text("T"), price=1.0, url="http://x/2", rating=True),
    Nested(book=BOOK, tags=["a", "b"], note={"k": BOOK}),
    {"title": "dict", "price": 1, "nested": {"a": [BOOK]}},
    Product(name="n", tags=["x"]),
]


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: type(item).__name__)
def test_item_fields_equals_itemadapter_asdict(item):
    fields = item_fields(item)
    expected = ItemAdapter(item).asdict()
    assert fields == expected
    assert list(fields) == list(expected)


def test_a_deleted_dataclass_field_is_left_out_as_itemadapter_does():
    book = BookItem(upc="u", title="t", price=1.0, url="http://x")
    del book.title  # no class default to fall back on
    assert item_fields(book) == ItemAdapter(book).asdict()
    assert "title" not in item_fields(book)


def test_kafka_message_is_the_sorted_json_of_the_fields():
    message = encode_item(BOOK)
    assert json.loads(message) == ItemAdapter(BOOK).asdict()
    assert list(json.loads(message)) == sorted(ItemAdapter(BOOK).asdict())


@pytest.mark.parametrize("item", ITEMS, ids=lambda item: type(item).__name__)
def test_kafka_message_holds_every_item_as_json(item):
    expected = json.loads(json.dumps(ItemAdapter(item).asdict(), default=str))
    assert json.loads(encode_item(item)) == expected


def test_kafka_message_keeps_text_unescaped_and_odd_values_readable():
    item = {"title": "Ça coûte 5 €", "when": dt.date(2026, 12, 1), "tags": {"b", "a"}, 7: "x"}
    message = encode_item(item)
    assert "Ça coûte 5 €".encode() in message
    assert json.loads(message) == {
        "title": "Ça coûte 5 €",
        "when": "2026-12-01",
        "tags": ["a", "b"],
        "7": "x",
    }


def test_an_integer_beyond_64_bits_still_makes_a_message():
    assert json.loads(encode_item({"big": 2**70})) == {"big": 2**70}


def _pipeline(tmp_path):
    crawler = get_crawler(settings_dict={"CRAWLFLEET_CSV_DIR": str(tmp_path)})
    crawler.stats.open_spider()

    class Spider:
        name = "books"
        _job = "job1"

    crawler.spider = Spider()
    pipeline = CsvPipeline.from_crawler(crawler)
    pipeline.open_spider()
    return pipeline, crawler


def test_csv_rows_are_what_dictwriter_writes(tmp_path):
    pipeline, _crawler = _pipeline(tmp_path)
    books = [BOOK, BookItem(upc="u,2", title='say "hi"\n', price=2.0, url="http://x/2")]
    for book in books:
        pipeline.process_item(book)
    pipeline.close_spider()
    expected = io.StringIO(newline="")
    columns = list(ItemAdapter(BOOK).field_names())
    writer = csv.DictWriter(expected, fieldnames=columns, extrasaction="raise")
    writer.writeheader()
    for book in books:
        writer.writerow(ItemAdapter(book).asdict())
    written = (tmp_path / "books" / "job1.csv").read_bytes().decode()
    assert written == expected.getvalue()


def test_csv_refuses_an_item_with_fields_outside_the_columns(tmp_path):
    pipeline, crawler = _pipeline(tmp_path)
    pipeline.process_item({"title": "a", "price": 1})
    pipeline.process_item({"price": 2})  # a missing column is written empty
    with pytest.raises(DropItem, match="outside the CSV columns: stock, url"):
        pipeline.process_item({"title": "b", "url": "u", "stock": 1})
    pipeline.close_spider()
    assert crawler.stats.get_value("crawlfleet/csv/items_refused") == 1
    assert crawler.stats.get_value("crawlfleet/csv/items_written") == 2
    rows = (tmp_path / "books" / "job1.csv").read_text().splitlines()
    assert rows == ["title,price", "a,1", ",2"]


@pytest.mark.parametrize("raw", [0, -1, "0", "-0.5", "soon", "", None, "nan", "inf"])
@pytest.mark.parametrize("name", ["KAFKA_POLL_INTERVAL", "KAFKA_DELIVERY_TIMEOUT"])
def test_a_duration_that_is_not_a_positive_number_is_refused_by_name(name, raw):
    with pytest.raises(ValueError, match=f"{name} must be a number of seconds above 0, got"):
        parse_seconds(name, raw)


@pytest.mark.parametrize(("raw", "seconds"), [(0.1, 0.1), ("0.25", 0.25), (2, 2.0)])
def test_a_positive_duration_is_taken_as_seconds(raw, seconds):
    assert parse_seconds("KAFKA_STARTUP_TIMEOUT", raw) == seconds


@pytest.mark.parametrize("raw", [-1, "-3", "1.5", "many", "", None, True])
def test_a_count_that_is_not_a_whole_number_of_0_or_more_is_refused(raw):
    with pytest.raises(ValueError, match="KAFKA_FAILURE_THRESHOLD must be a whole number of 0"):
        parse_count("KAFKA_FAILURE_THRESHOLD", raw)


@pytest.mark.parametrize(("raw", "count"), [(0, 0), ("0", 0), (" 7 ", 7), (25, 25)])
def test_a_whole_count_is_taken(raw, count):
    assert parse_count("KAFKA_FAILURE_THRESHOLD", raw) == count
