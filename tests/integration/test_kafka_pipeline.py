"""The Kafka item pipeline against a real broker and the demo bookshop, through `scrapy crawl`.

The spiders at the bottom exist for the per-spider topic tests: the crawl subprocess loads them
with ``-s SPIDER_MODULES=tests.integration.test_kafka_pipeline``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from controlplane.lib.procutil import free_port
from crawler.spiders.books import BooksSpider
from demo.bookshop import Book
from tests.fixtures.common import CrawlResult
from tests.fixtures.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

ATTRIBUTE_TOPIC = "crawlfleet.test.attribute-topic"
CUSTOM_SETTINGS_TOPIC = "crawlfleet.test.custom-settings-topic"


class AttributeTopicBooksSpider(BooksSpider):
    """Names its topic with the ``kafka_topic`` attribute."""

    name = "books_attribute_topic"
    kafka_topic = ATTRIBUTE_TOPIC


class CustomSettingsTopicBooksSpider(BooksSpider):
    """Names its topic in ``custom_settings``."""

    name = "books_custom_settings_topic"
    custom_settings = {"KAFKA_TOPIC": CUSTOM_SETTINGS_TOPIC}


def stat(output: str, name: str) -> str | None:
    """One value from Scrapy's stats dump in ``output``, as text (quotes stripped)."""
    match = re.search(rf"'{re.escape(name)}': ([^,\n}}]+)", output)
    return None if match is None else match.group(1).strip().strip("'")


def int_stat(output: str, name: str) -> int:
    value = stat(output, name)
    return 0 if value is None else int(value)


def kafka_settings(broker: KafkaBroker, topic: str, **extra: str) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_TOPIC": topic, **extra}


def test_every_item_arrives_once_keyed_by_upc(run_crawl, demo_site, kafka_broker, kafka_topic):
    result = run_crawl(
        "books",
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html"},
        settings=kafka_settings(kafka_broker, kafka_topic),
    )
    assert result.returncode == 0, result.output
    assert stat(result.output, "finish_reason") == "finished"
    assert int_stat(result.output, "kafka/items_delivered") == 200
    assert int_stat(result.output, "kafka/items_failed") == 0
    assert stat(result.output, "crawlfleet/outcome") is None

    records = kafka_broker.consume_all(kafka_topic)
    keys = [record.key.decode() for record in records]
    assert len(keys) == 200
    assert sorted(keys) == sorted(Book(n).upc for n in range(1, 201))
    by_key = {record.key.decode(): record for record in records}
    for number in (1, 7, 200):
        book = Book(number)
        record = by_key[book.upc]
        value = json.loads(record.value)
        assert value["upc"] == book.upc
        assert value["title"] == book.title
        assert value["price"] == float(book.price)
        assert value["rating"] == book.rating
        assert value["stock"] == book.stock
        assert value["currency"] == "GBP"
        assert value["url"] == f"{demo_site.base_url}{book.path}"
        assert value["crawled_at"]
        assert dict(record.headers)["crawlfleet-spider"] == b"books"


def test_a_full_local_queue_slows_the_crawl_and_loses_nothing(
    run_crawl, demo_site, kafka_broker, kafka_topic
):
    # Room for two messages: most produce() calls find librdkafka's queue full and wait.
    config = {"queue.buffering.max.messages": 2, "linger.ms": 20}
    result = run_crawl(
        "books",
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html", "max_pages": "3"},
        settings=kafka_settings(
            kafka_broker, kafka_topic, KAFKA_PRODUCER_CONFIG=json.dumps(config)
        ),
    )
    assert result.returncode == 0, result.output
    assert int_stat(result.output, "kafka/queue_full_waits") > 0, result.output
    assert int_stat(result.output, "kafka/items_delivered") == 60
    assert int_stat(result.output, "kafka/items_failed") == 0
    keys = sorted(record.key.decode() for record in kafka_broker.consume_all(kafka_topic))
    assert keys == sorted(Book(n).upc for n in range(1, 61))


def test_broker_lost_mid_crawl_fails_the_run_and_accounts_for_every_item(
    run_crawl, fresh_demo_site, private_kafka_broker, kafka_topic
):
    broker = private_kafka_broker
    broker.create_topic(kafka_topic)
    # About 30 s of crawling if nothing stops it: long enough for deliveries to time out mid-crawl
    # with room to spare when a loaded machine is slow to see the failures and close.
    fresh_demo_site.config.delay = 1.0
    settings = kafka_settings(
        broker, kafka_topic, KAFKA_DELIVERY_TIMEOUT="2", CONCURRENT_REQUESTS_PER_DOMAIN="2"
    )
    url = f"{fresh_demo_site.base_url}/catalogue/page-1.html"
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        crawl = pool.submit(run_crawl, "books", args={"start_url": url}, settings=settings)
        # Let some items through first, so that the run has both deliveries and failures.
        while len(broker.consume_all(kafka_topic)) < 3:
            assert not crawl.done(), crawl.result().output
            assert time.monotonic() - started < 30, "no item reached Kafka within 30 s"
            time.sleep(0.2)
        broker.kill()
        result: CrawlResult = crawl.result(timeout=60)
    output = result.output

    scraped = int_stat(output, "item_scraped_count")
    delivered = int_stat(output, "kafka/items_delivered")
    failed = int_stat(output, "kafka/items_failed")
    assert delivered > 0, output
    assert failed > 0, output
    assert delivered + failed == scraped == int_stat(output, "kafka/items_sent"), output
    # The failures stopped the crawl early, and the run says why.
    assert stat(output, "finish_reason") == "kafka_delivery_failed", output
    assert stat(output, "crawlfleet/outcome") == "failed", output
    assert stat(output, "crawlfleet/failure_reason") == "kafka_delivery_failed", output
    assert scraped < 60, output
    assert "Kafka did not deliver item" in output
    assert f"Kafka delivery failed for {failed} of {scraped} items" in output
    assert int_stat(output, "log_count/ERROR") > 0

    # Everything counted as delivered survived the crash, once. (A failed item may be there too
    # if only its acknowledgement was lost, so the upper bound is delivered + failed.)
    broker.restart()
    keys = [record.key.decode() for record in broker.consume_all(kafka_topic)]
    assert len(keys) == len(set(keys))
    assert delivered <= len(keys) <= delivered + failed


def test_unreachable_kafka_stops_the_run_before_any_request(run_crawl, fresh_demo_site):
    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={
            "KAFKA_BOOTSTRAP_SERVERS": nobody,
            "KAFKA_TOPIC": "items",
            "KAFKA_STARTUP_TIMEOUT": "2",
        },
    )
    assert time.monotonic() - started < 30
    output = result.output
    assert f"Kafka is unavailable: cannot reach topic 'items' on {nobody} within 2.0s" in output
    assert "Traceback" not in output
    assert stat(output, "finish_reason") == "kafka_unavailable"
    assert stat(output, "crawlfleet/outcome") == "failed"
    assert stat(output, "crawlfleet/failure_reason") == "kafka_unavailable"
    assert stat(output, "item_scraped_count") is None
    assert fresh_demo_site.hits.snapshot() == {}
    assert not result.csv_files("books")


@pytest.mark.parametrize(
    ("spider", "topic"),
    [
        (AttributeTopicBooksSpider.name, ATTRIBUTE_TOPIC),
        (CustomSettingsTopicBooksSpider.name, CUSTOM_SETTINGS_TOPIC),
    ],
)
def test_a_spider_chooses_its_own_topic(
    run_crawl: Callable[..., CrawlResult],
    demo_site,
    kafka_broker: KafkaBroker,
    spider: str,
    topic: str,
    kafka_topic: str,
) -> None:
    settings = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "SPIDER_MODULES": "tests.integration.test_kafka_pipeline",
    }
    if spider == AttributeTopicBooksSpider.name:
        # The attribute beats even a command-line KAFKA_TOPIC; custom_settings cannot, by design.
        settings["KAFKA_TOPIC"] = kafka_topic
    result = run_crawl(
        spider,
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html", "max_pages": "1"},
        settings=settings,
    )
    assert result.returncode == 0, result.output
    assert stat(result.output, "kafka/topic") == topic
    assert int_stat(result.output, "kafka/items_delivered") == 20
    keys = sorted(record.key.decode() for record in kafka_broker.consume_all(topic))
    assert keys == sorted(Book(n).upc for n in range(1, 21))
    assert kafka_topic not in kafka_broker.topics()


def test_invalid_producer_settings_stop_the_run_with_their_own_reason(run_crawl, fresh_demo_site):
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "KAFKA_PRODUCER_CONFIG": json.dumps({"lingr.ms": 5}),
        },
    )
    assert "Kafka producer settings are invalid" in result.output
    assert "lingr.ms" in result.output
    assert stat(result.output, "finish_reason") == "kafka_misconfigured"
    assert stat(result.output, "crawlfleet/outcome") == "failed"
    assert fresh_demo_site.hits.snapshot() == {}


@pytest.mark.parametrize(
    ("setting", "value", "refusal"),
    [
        ("KAFKA_POLL_INTERVAL", "0", "a number of seconds above 0"),
        ("KAFKA_POLL_INTERVAL", "-1", "a number of seconds above 0"),
        ("KAFKA_POLL_INTERVAL", "often", "a number of seconds above 0"),
        ("KAFKA_DELIVERY_TIMEOUT", "-5", "a number of seconds above 0"),
        ("KAFKA_STARTUP_TIMEOUT", "0", "a number of seconds above 0"),
        ("KAFKA_FAILURE_THRESHOLD", "some", "a whole number of 0 or more"),
    ],
)
def test_an_invalid_number_stops_the_run_as_misconfigured_naming_the_setting(
    run_crawl, fresh_demo_site, setting, value, refusal
):
    """Zero or a typo was once quietly replaced by the default, or reached librdkafka and failed
    there under another name; now it is refused when the spider opens, by name."""
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", setting: value},
    )
    assert f"{setting} must be {refusal}, got '{value}'" in result.output
    assert stat(result.output, "finish_reason") == "kafka_misconfigured"
    assert stat(result.output, "crawlfleet/outcome") == "failed"
    assert fresh_demo_site.hits.snapshot() == {}
