"""Crawls shared by several worker processes through a real redis-server.

Workers are real ``scrapy crawl shared_books`` processes run from the repo root, as a Scrapyd node
would run them, against the demo bookshop, whose hit counter proves "fetched exactly once".
"""

from __future__ import annotations

import csv
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from controlplane.lib.procutil import free_port
from crawler.redis_coordination import SeedOutcome, SharedCrawl, purge_crawl
from crawler.redis_keys import CrawlKeys, crawl_id_argument
from crawler.redis_support import redact_url
from crawler.sharedkeys import DEFAULT_KEY_PREFIX
from demo.bookshop import Book, DemoServer
from tests.fixtures.common import REPO_ROOT, VENV_BIN, CrawlResult

pytestmark = pytest.mark.redis

SPIDER = "shared_books"
# Idle workers look at Redis every 0.2 s instead of every second, so tests finish quickly.
FAST = {"SHARED_IDLE_TICK": "0.2", "SHARED_HEARTBEAT_INTERVAL": "0.5"}


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    job: str

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"worker {self.job} still running after {timeout}s:\n{self.output()}")
        return returncode, self.output()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch_worker(
    job: str,
    *,
    args: dict[str, str],
    redis_url: str,
    csv_dir: Path,
    settings: dict[str, str] | None = None,
) -> Worker:
    """``scrapy crawl shared_books`` in the background, like ``run_crawl`` but not waited for."""
    argv = [str(VENV_BIN / "scrapy"), "crawl", SPIDER, "-a", f"_job={job}"]
    for key, value in args.items():
        argv += ["-a", f"{key}={value}"]
    merged = {
        "CRAWLFLEET_CSV_DIR": str(csv_dir),
        "REDIS_URL": redis_url,
        **FAST,
        **(settings or {}),
    }
    for key, value in merged.items():
        argv += ["-s", f"{key}={value}"]
    log_path = csv_dir.parent / f"{job}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT
        )
    return Worker(proc, log_path, job)


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """``launch_worker``, killing whatever a failed test left running."""
    started: list[Worker] = []

    def start(job: str, **kwargs: Any) -> Worker:
        worker = launch_worker(job, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=10)


def wait_for_log(workers: list[Worker], text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(text in worker.output() for worker in workers):
        for worker in workers:
            if worker.proc.poll() is not None and text not in worker.output():
                pytest.fail(f"worker {worker.job} exited before {text!r}:\n{worker.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} from every worker in {timeout}s")
        time.sleep(0.05)


def csv_rows(csv_dir: Path, job: str) -> list[dict[str, str]]:
    path = csv_dir / SPIDER / f"{job}.csv"
    if not path.exists():  # a worker that scraped nothing writes no file
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def site_paths(site: DemoServer) -> set[str]:
    """Every list and detail page of the site: what a full crawl must fetch."""
    pages = {f"/catalogue/page-{n}.html" for n in range(1, site.config.pages + 1)}
    return pages | {Book(n).path for n in range(1, site.config.books + 1)}


def crawl_args(site: DemoServer, crawl_id: str) -> dict[str, str]:
    return {"crawl_id": crawl_id, "start_url": f"{site.base_url}/catalogue/page-1.html"}


def test_two_workers_fetch_every_url_once_between_them(
    start_worker: Callable[..., Worker],
    fresh_demo_site: DemoServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    site = fresh_demo_site
    # Scrapy takes seconds to start, and not equally long in both processes: keep the site slow
    # until both engines run, so the first one up can't finish the crawl alone.
    site.config.delay = 0.5
    csv_dir = tmp_path / "csv"
    workers = [
        start_worker(
            job,
            args=crawl_args(site, "books-run-1"),
            redis_url=redis_url,
            csv_dir=csv_dir,
            settings={"CONCURRENT_REQUESTS": "4"},
        )
        for job in ("worker-a", "worker-b")
    ]
    wait_for_log(workers, "Spider opened")
    site.config.delay = 0.05
    results = [worker.wait() for worker in workers]

    for returncode, output in results:
        assert returncode == 0, output
        assert "'finish_reason': 'finished'" in output
        assert "Traceback" not in output
        assert "scrapy_redis/scheduler.py" not in output  # its deprecation warnings are filtered
    outputs = [output for _, output in results]
    # Exactly one of them seeded the crawl; the other worked from the queue.
    assert sorted("'crawlfleet/shared/seeded': True" in out for out in outputs) == [False, True]

    hits = site.hits.snapshot()
    expected = site_paths(site)
    assert {path: hits.get(path, 0) for path in expected} == dict.fromkeys(expected, 1)
    assert set(hits) - expected == {"/robots.txt"}  # each worker reads robots.txt itself

    rows = {job: csv_rows(csv_dir, job) for job in ("worker-a", "worker-b")}
    assert all(rows.values()), f"a worker scraped nothing: { {k: len(v) for k, v in rows.items()} }"
    upcs = [row["upc"] for job_rows in rows.values() for row in job_rows]
    assert sorted(upcs) == sorted(Book(n).upc for n in range(1, site.config.books + 1))

    # The last worker out deleted every key of the crawl; the test's DB held nothing else.
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("*") == []
    assert sum("last worker out: deleted every key" in out for out in outputs) == 1


def test_a_finished_crawl_id_is_not_crawled_again_but_a_new_one_is(
    start_worker: Callable[..., Worker],
    fresh_demo_site: DemoServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    site = fresh_demo_site
    csv_dir = tmp_path / "csv"
    settings = {
        "SHARED_DONE_MARKER_TTL": "600",
        "SCHEDULER_PERSIST": "False",  # ignored, with a warning: shared crawls pin it to True
    }
    expected = site_paths(site)

    def crawl(job: str, crawl_id: str) -> str:
        worker = start_worker(
            job,
            args=crawl_args(site, crawl_id),
            redis_url=redis_url,
            csv_dir=csv_dir,
            settings=settings,
        )
        returncode, output = worker.wait()
        assert returncode == 0, output
        assert "ignoring SCHEDULER_PERSIST='False': shared crawls need True" in output
        return output

    crawl("first", "nightly-1")
    assert len(csv_rows(csv_dir, "first")) == site.config.books
    assert set(site.hits.snapshot().values()) == {1}

    # A worker that starts after its crawl finished (it sat in a busy node's queue) fetches nothing.
    late = crawl("late", "nightly-1")
    assert "shared crawl 'nightly-1' finished earlier" in late
    assert csv_rows(csv_dir, "late") == []
    assert set(site.hits.snapshot().values()) == {1}

    crawl("second", "nightly-2")
    assert len(csv_rows(csv_dir, "second")) == site.config.books
    hits = site.hits.snapshot()
    assert {path: hits.get(path, 0) for path in expected} == dict.fromkeys(expected, 2)

    # Only the done markers remain, and they expire.
    with redis.Redis.from_url(redis_url) as client:
        markers = sorted(client.keys("*"))
        assert markers == sorted(
            CrawlKeys.build(DEFAULT_KEY_PREFIX, SPIDER, crawl_id).finished.encode()
            for crawl_id in ("nightly-1", "nightly-2")
        )
        assert all(0 < client.ttl(marker) <= 600 for marker in markers)


def test_missing_crawl_id_is_a_clear_error(
    run_crawl: Callable[..., CrawlResult], fresh_demo_site: DemoServer, redis_url: str
) -> None:
    result = run_crawl(
        SPIDER,
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"REDIS_URL": redis_url},
        timeout=60,
    )
    assert result.returncode != 0
    assert "invalid arguments for spider 'shared_books': missing required argument 'crawl_id'" in (
        result.output
    )
    assert fresh_demo_site.hits.snapshot() == {}


def test_malformed_crawl_id_is_a_clear_error(
    run_crawl: Callable[..., CrawlResult], fresh_demo_site: DemoServer, redis_url: str
) -> None:
    result = run_crawl(
        SPIDER,
        args={"crawl_id": "nightly *", "start_url": fresh_demo_site.base_url},
        settings={"REDIS_URL": redis_url},
        timeout=60,
    )
    assert result.returncode != 0
    assert "argument 'crawl_id': expected 1-128 letters, digits" in result.output
    assert fresh_demo_site.hits.snapshot() == {}


@pytest.mark.parametrize(
    ("make_url", "message"),
    [
        (lambda port: "http://127.0.0.1:6379/0", "is not a valid Redis URL"),
        (lambda port: f"redis://:s3cret@127.0.0.1:{port}/0", "cannot reach Redis at redis://"),
    ],
    ids=["malformed", "unreachable"],
)
def test_bad_redis_url_stops_before_the_first_request(
    run_crawl: Callable[..., CrawlResult],
    fresh_demo_site: DemoServer,
    make_url: Callable[[int], str],
    message: str,
) -> None:
    url = make_url(free_port())
    result = run_crawl(
        SPIDER,
        args=crawl_args(fresh_demo_site, "bad-redis"),
        settings={"REDIS_URL": url},
        timeout=60,
    )
    assert result.returncode != 0
    assert "cannot start shared crawl of spider 'shared_books'" in result.output
    assert message in result.output
    assert "s3cret" not in result.output  # the password never reaches the log
    assert "Spider opened" not in result.output
    assert fresh_demo_site.hits.snapshot() == {}


# --- the coordination scripts, driven directly --------------------------------------------------


def shared(client: redis.Redis, worker: str, crawl_id: str = "unit") -> SharedCrawl:
    return SharedCrawl(client, CrawlKeys.build("test", SPIDER, crawl_id), worker, worker_timeout=5)


def test_simultaneous_workers_seed_exactly_once(redis_url: str) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[SeedOutcome] = []

    def seed(number: int) -> None:
        with redis.Redis.from_url(redis_url) as client:
            crawl = shared(client, f"w{number}")
            barrier.wait()
            outcomes.append(crawl.seed(["http://example.test/a", "http://example.test/b"]))

    threads = [threading.Thread(target=seed, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(o.value for o in outcomes) == ["already_seeded"] * 7 + ["seeded"]
    with redis.Redis.from_url(redis_url) as client:
        keys = CrawlKeys.build("test", SPIDER, "unit")
        assert client.lrange(keys.start_urls, 0, -1) == [
            b"http://example.test/a",
            b"http://example.test/b",
        ]


def test_only_the_last_worker_out_of_a_finished_crawl_deletes_it(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        a, b = shared(client, "a"), shared(client, "b")
        a.join()
        b.join()
        a.seed(["http://example.test/"])
        assert a.pop_start_urls(10) == [b"http://example.test/"]
        client.zadd(a.keys.requests, {b"request": 0})

        assert not a.mark_idle().done  # a request is pending and b is busy
        assert b.pop_request() == b"request"
        assert not a.mark_idle().done  # b holds the request
        assert b.mark_idle().done

        first = a.leave(finished=True)
        assert (first.deleted, first.remaining_workers) == (False, 1)
        assert client.exists(a.keys.seeded)  # b still works: nothing deleted
        last = b.leave(finished=True)
        assert last.deleted
        assert client.keys("*") == []


def test_last_worker_out_of_an_unfinished_crawl_keeps_it_for_a_resume(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        a = shared(client, "a")
        a.join()
        a.seed(["http://example.test/"])
        client.zadd(a.keys.requests, {b"request": 0})
        outcome = a.leave(finished=False)
        assert (outcome.deleted, outcome.pending) == (False, 2)
        assert client.exists(a.keys.seeded, a.keys.requests, a.keys.start_urls) == 3
        # A worker started later with the same crawl id resumes instead of seeding again.
        again = shared(client, "a2")
        again.join()
        assert again.seed(["http://example.test/"]) is SeedOutcome.ALREADY_SEEDED
        # ...or the control plane gives up on it and purges it.
        # seeded, requests, start_urls, workers (a2) and alive
        assert purge_crawl(client, SPIDER, "unit", prefix="test") == 5
        assert client.keys("*") == []


def test_a_dead_worker_does_not_hold_the_crawl_open(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        alive, dead = shared(client, "alive"), shared(client, "dead")
        alive.join()
        dead.join()
        client.hset(alive.keys.workers, "dead", "1")  # last heartbeat long ago
        status = alive.mark_idle()
        assert (status.workers, status.done) == (1, True)


def test_crawl_ids_and_urls_in_messages() -> None:
    assert crawl_id_argument(" job-1.a_b ") == "job-1.a_b"
    for bad in ("", "a:b", "a*", "{a}", "50%", "-lead"):
        with pytest.raises(ValueError, match="expected 1-128 letters"):
            crawl_id_argument(bad)
    assert redact_url("redis://user:pw@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
