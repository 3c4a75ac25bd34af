"""Fan-out: one crawl shared by K nodes through Redis, end to end on real nodes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from controlplane.jobs.completion import progress
from controlplane.jobs.models import Job
from controlplane.scheduling.models import TaskRun
from tests.fixtures.fleet import (
    describe_jobs,
    drive,
    make_task,
    register_fleet,
    run_closed,
    start_run,
)
from tests.fixtures.scrapyd import EggFile, NodeFactory

pytestmark = [pytest.mark.scrapyd, pytest.mark.redis, pytest.mark.slow]

BOOK = re.compile(r"^/catalogue/book-(\d+)\.html$")


def test_fanout_run_crawls_each_page_once_across_two_nodes(
    transactional_db, fast, tmp_path: Path, crawler_egg: EggFile, redis_url, fresh_demo_site, poller
):
    fast.CRAWLFLEET_REDIS_URL = redis_url
    factory = NodeFactory(tmp_path / "nodes")
    try:
        nodes = factory(2, max_proc=2, poll_interval=0.2)
        for node in nodes:
            node.deploy(crawler_egg)
        fleet = register_fleet(nodes, crawler_egg)
        # Slow pages keep both shards busy at once, so the work really is shared.
        fresh_demo_site.config.delay = 0.3
        fresh_demo_site.hits.reset()
        task = make_task(
            fleet,
            "shared_books",
            fanout=2,
            args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
            settings={
                "SHARED_IDLE_TICK": "0.5",
                "CONCURRENT_REQUESTS_PER_DOMAIN": "2",
                "CRAWLFLEET_CSV_DIR": str(tmp_path / "csv"),
            },
        )
        run = start_run(task)
        shards = list(run.jobs.all())
        assert len({job.args["crawl_id"] for job in shards}) == 1
        assert all(job.settings["REDIS_URL"] == redis_url for job in shards)

        drive(poller, run_closed(run), timeout=120)
    finally:
        factory.close()

    assert run.state == TaskRun.State.SUCCEEDED, describe_jobs()
    jobs = list(run.jobs.order_by("shard"))
    assert [job.state for job in jobs] == [Job.State.SUCCEEDED, Job.State.SUCCEEDED]
    assert len({job.node_id for job in jobs}) == 2, "the shards ran on different nodes"
    assert all(job.items > 0 for job in jobs), "both shards did part of the work"

    total = progress(run)
    assert total.items == 60
    assert total.shards == total.shards_done == 2

    hits = fresh_demo_site.hits.snapshot()
    books = {int(m.group(1)): count for path, count in hits.items() if (m := BOOK.match(path))}
    assert books == dict.fromkeys(range(1, 61), 1), "every book page fetched exactly once"

    with redis.Redis.from_url(redis_url) as client:
        assert client.keys("*") == [], "the finished crawl leaves no key behind"
