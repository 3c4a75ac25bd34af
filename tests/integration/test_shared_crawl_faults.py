"""A shared crawl whose Redis loses its data, or goes away for a while, under real workers.

Losing the data must never end as a "finished" crawl with pages missing: every worker stops with
``shared_frontier_lost``, says so at ERROR, and the control plane files the job failed. An outage
with the data kept is waited out, logged once when it starts and once when it ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from controlplane.jobs.outcome import Evidence, classify, parse_log
from demo.bookshop import Book, DemoServer
from tests.fixtures.redis import RedisServer
from tests.integration.test_shared_crawl import (
    Worker,
    crawl_args,
    csv_rows,
    start_worker,
    wait_for_log,
)

pytestmark = pytest.mark.redis
start_worker = start_worker  # the fixture, from tests/integration/test_shared_crawl.py


def wait_for_hits(site: DemoServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(site.hits.snapshot().values()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} hits in {timeout}s"
        time.sleep(0.05)


def stat(output: str, name: str) -> str | None:
    found = re.search(rf"'{re.escape(name)}': ([^,\n}}]+)", output)
    return found.group(1).strip("'") if found else None


@pytest.mark.parametrize("how", ["flushdb", "restart_without_data"])
def test_redis_losing_the_crawl_fails_every_worker_loudly(
    start_worker: Callable[..., Worker],
    fresh_demo_site: DemoServer,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
    how: str,
) -> None:
    site = fresh_demo_site
    site.config.delay = 0.3  # long enough that the crawl is still going when its data goes
    csv_dir = tmp_path / "csv"
    workers = [
        start_worker(
            job,
            args=crawl_args(site, f"lost-{how}"),
            redis_url=redis_url,
            csv_dir=csv_dir,
            settings={"CONCURRENT_REQUESTS": "2"},
        )
        for job in ("worker-a", "worker-b")
    ]
    wait_for_log(workers, "Spider opened")
    wait_for_hits(site, 8)
    if how == "flushdb":
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()
    else:
        redis_server.restart(down_for=1, keep_data=False)
    results = [worker.wait(timeout=120) for worker in workers]

    for returncode, output in results:
        assert returncode == 0, output
        assert stat(output, "finish_reason") == "shared_frontier_lost", output[-4000:]
        assert stat(output, "crawlfleet/shared/frontier_lost") == "True"
        assert re.search(r"ERROR: shared crawl 'lost-[a-z_]+': its Redis frontier is gone", output)
        assert "Traceback" not in output
        verdict = classify(Evidence(log=parse_log(output)))
        assert (verdict.state, verdict.cause) == ("failed", "shared_frontier_lost")
    scraped = {row["upc"] for job in ("worker-a", "worker-b") for row in csv_rows(csv_dir, job)}
    assert len(scraped) < site.config.books  # stopped, not finished: pages were left
    # Whatever the workers wrote after the loss went with the last of them.
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("*") == []


def test_a_redis_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    start_worker: Callable[..., Worker],
    fresh_demo_site: DemoServer,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    site = fresh_demo_site
    site.config.delay = 0.2
    csv_dir = tmp_path / "csv"
    worker = start_worker(
        "worker-a",
        args=crawl_args(site, "outage"),
        redis_url=redis_url,
        csv_dir=csv_dir,
        settings={"CONCURRENT_REQUESTS": "2"},
    )
    # Pagination goes first: once the last list page is in, the rest are detail pages, which
    # queue nothing, so no request is being pushed while Redis is away.
    last_list_page = f"/catalogue/page-{site.config.pages}.html"
    deadline = time.monotonic() + 60
    while last_list_page not in site.hits.snapshot():
        assert time.monotonic() < deadline, "the last list page was never fetched"
        assert worker.proc.poll() is None, worker.output()
        time.sleep(0.05)
    time.sleep(0.5)
    redis_server.restart(down_for=3)  # data kept
    returncode, output = worker.wait(timeout=120)

    assert returncode == 0, output
    assert stat(output, "finish_reason") == "finished", output[-4000:]
    assert "Traceback" not in output
    assert output.count("Redis is unreachable") == 1, output[-6000:]
    assert re.search(
        r"WARNING: shared crawl 'outage': Redis is unreachable \([a-z ]+: ConnectionError: ",
        output,
    )
    assert re.search(r"INFO: shared crawl 'outage': Redis is back after \d+\.\ds", output)
    assert output.count("Redis is back after") == 1
    assert stat(output, "crawlfleet/shared/redis_outages") == "1"
    assert int(stat(output, "crawlfleet/shared/redis_errors") or 0) > 3  # a few ticks' worth
    assert float(stat(output, "crawlfleet/shared/redis_down_seconds") or 0) >= 2.5
    assert {row["upc"] for row in csv_rows(csv_dir, "worker-a")} == {
        Book(n).upc for n in range(1, site.config.books + 1)
    }


def test_links_found_while_redis_is_away_are_held_and_queued_when_it_is_back(
    start_worker: Callable[..., Worker],
    fresh_demo_site: DemoServer,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    site = fresh_demo_site
    site.config.delay = 1.0  # each request is answered a second after it arrives
    csv_dir = tmp_path / "csv"
    worker = start_worker(
        "worker-a",
        args=crawl_args(site, "held"),
        redis_url=redis_url,
        csv_dir=csv_dir,
        settings={"CONCURRENT_REQUESTS": "2"},
    )
    deadline = time.monotonic() + 60
    while "/catalogue/page-2.html" not in site.hits.snapshot():
        assert time.monotonic() < deadline, "list page 2 was never requested"
        assert worker.proc.poll() is None, worker.output()
        time.sleep(0.01)
    # Page 2 is answered (and its 21 links parsed) while Redis is down.
    site.config.delay = 0.02
    redis_server.restart(down_for=3)
    returncode, output = worker.wait(timeout=120)

    assert returncode == 0, output
    assert stat(output, "finish_reason") == "finished", output[-4000:]
    assert "Traceback" not in output
    assert "log_count/ERROR" not in output
    assert int(stat(output, "crawlfleet/shared/requests_held") or 0) >= 20, output[-4000:]
    assert {row["upc"] for row in csv_rows(csv_dir, "worker-a")} == {
        Book(n).upc for n in range(1, site.config.books + 1)
    }
    hits = site.hits.snapshot()
    assert {hits[Book(n).path] for n in range(1, site.config.books + 1)} == {1}


def test_a_worker_gives_up_on_redis_after_shared_redis_down_timeout(
    start_worker: Callable[..., Worker],
    fresh_demo_site: DemoServer,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    site = fresh_demo_site
    site.config.delay = 0.3
    worker = start_worker(
        "worker-a",
        args=crawl_args(site, "gone"),
        redis_url=redis_url,
        csv_dir=tmp_path / "csv",
        settings={"CONCURRENT_REQUESTS": "2", "SHARED_REDIS_DOWN_TIMEOUT": "2"},
    )
    wait_for_log([worker], "Spider opened")
    wait_for_hits(site, 4)
    redis_server.restart(down_for=8)  # the worker stops long before Redis is back
    returncode, output = worker.wait(timeout=120)

    assert returncode == 0, output
    assert stat(output, "finish_reason") == "shared_redis_error", output[-4000:]
    assert re.search(r"ERROR: shared crawl 'gone': Redis unreachable for [23]s", output)
    assert output.count("Redis is unreachable") == 1
    verdict = classify(Evidence(log=parse_log(output)))
    assert (verdict.state, verdict.cause) == ("failed", "shared_redis_error")
