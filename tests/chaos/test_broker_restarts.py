"""Redis restarted during a shared (fan-out) crawl, and the Kafka broker restarted during a crawl.

Each crawl runs as real ``scrapy crawl`` processes. The invariant is the same for both: the crawl
either completes without losing an item, or fails loudly, saying why. Nothing is dropped
silently: for Kafka, ``kafka/items_delivered + kafka/items_failed == item_scraped_count``, and a
crawl that reports success has every item in the topic; for Redis, workers that both finish
cleanly have scraped every book between them.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from demo.bookshop import Book
from tests.integration.test_shared_crawl import crawl_args, csv_rows, start_worker, wait_for_log

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
start_worker = start_worker  # the fixture, from tests/integration/test_shared_crawl.py


def stat(output: str, name: str) -> str | None:
    found = re.search(rf"'{re.escape(name)}': ([^,\n}}]+)", output)
    return found.group(1).strip("'") if found else None


def int_stat(output: str, name: str) -> int:
    return int(stat(output, name) or 0)


@pytest.mark.redis
def test_redis_restarted_mid_shared_crawl_loses_nothing_silently(
    start_worker, fresh_demo_site, redis_server, redis_url, tmp_path
):
    site = fresh_demo_site
    site.config.delay = 0.5
    csv_dir = tmp_path / "csv"
    jobs = ("worker-a", "worker-b")
    workers = [
        start_worker(
            job,
            args=crawl_args(site, "chaos-redis"),
            redis_url=redis_url,
            csv_dir=csv_dir,
            settings={"CONCURRENT_REQUESTS": "2"},
        )
        for job in jobs
    ]
    wait_for_log(workers, "Spider opened")
    time.sleep(2)  # both are crawling: requests are in the shared queue
    redis_server.restart(down_for=2)
    site.config.delay = 0.05
    results = [worker.wait(timeout=120) for worker in workers]

    expected = {Book(n).upc for n in range(1, site.config.books + 1)}
    upcs = [row["upc"] for job in jobs for row in csv_rows(csv_dir, job)]
    clean = all(
        code == 0 and stat(output, "finish_reason") == "finished" for code, output in results
    )
    if clean:
        assert set(upcs) == expected, f"{len(expected - set(upcs))} book(s) silently lost"
    else:
        # A failure must say what happened: an error naming Redis in some worker's log.
        logs = "\n".join(output for _, output in results)
        assert re.search(r"ERROR: .*[Rr]edis", logs), logs[-6000:]
    assert set(upcs) <= expected
    # The outage is waited out, and logged once by each worker when it starts and once when it
    # ends, with no traceback from the scheduler's looks at the queue meanwhile.
    for _, output in results:
        assert output.count("shared crawl 'chaos-redis': Redis is unreachable") == 1, output
        assert output.count("shared crawl 'chaos-redis': Redis is back after") == 1, output
        assert stat(output, "crawlfleet/shared/redis_outages") == "1"
        assert "scrapy_redis/queue.py" not in output


@pytest.mark.kafka
def test_kafka_restarted_mid_crawl_delivers_or_fails_loudly(
    run_crawl, fresh_demo_site, private_kafka_broker, kafka_topic
):
    broker = private_kafka_broker
    broker.create_topic(kafka_topic)
    site = fresh_demo_site
    site.config.delay = 0.5
    settings = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "KAFKA_TOPIC": kafka_topic,
        "KAFKA_DELIVERY_TIMEOUT": "60",
        "CONCURRENT_REQUESTS_PER_DOMAIN": "2",
    }
    url = f"{site.base_url}/catalogue/page-1.html"
    with ThreadPoolExecutor(max_workers=1) as pool:
        crawl = pool.submit(run_crawl, "books", args={"start_url": url}, settings=settings)
        deadline = time.monotonic() + 30
        while len(broker.consume_all(kafka_topic)) < 3:
            assert not crawl.done(), crawl.result().output
            assert time.monotonic() < deadline, "no item reached Kafka within 30 s"
            time.sleep(0.2)
        broker.stop()  # a graceful broker restart, as a rolling upgrade does
        broker.restart()
        site.config.delay = 0.0
        result = crawl.result(timeout=120)
    output = result.output

    scraped = int_stat(output, "item_scraped_count")
    delivered = int_stat(output, "kafka/items_delivered")
    failed = int_stat(output, "kafka/items_failed")
    assert scraped == site.config.books, output[-6000:]
    assert delivered + failed == scraped == int_stat(output, "kafka/items_sent"), output[-6000:]
    keys = Counter(record.key.decode() for record in broker.consume_all(kafka_topic))
    expected = {Book(n).upc for n in range(1, site.config.books + 1)}
    if failed == 0:
        assert stat(output, "crawlfleet/outcome") is None, output[-6000:]
        assert set(keys) == expected
        assert max(keys.values()) == 1, "the idempotent producer wrote an item twice"
    else:
        assert stat(output, "crawlfleet/outcome") == "failed", output[-6000:]
        assert stat(output, "crawlfleet/failure_reason") == "kafka_delivery_failed"
        assert "Kafka did not deliver item" in output
        assert len(set(keys)) >= delivered
