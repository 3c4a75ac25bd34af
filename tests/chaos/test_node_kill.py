"""A node SIGKILLed mid-job, with the whole control plane running as real processes.

Two ways to lose a node: its whole process group (Scrapyd and the crawl die together), and its
Scrapyd alone (the crawl lives on as an orphan, which must be told to stop before the retry
starts). Either way the job is marked lost, retried on another node, and completes; every item
of the completed attempt is in Kafka once per item id, and the old attempt had sent its last item
and closed (a killed group: died) before the retry's process started, by the retry node's exit
record.

This case was first ``test_killed_scrapyd_loses_the_job_which_completes_elsewhere_and_the_orphan_
stops`` in tests/integration/test_failures.py; it moved here, with Kafka and the group kill added.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from datetime import UTC, datetime

import pytest

from controlplane.jobs.models import Job
from controlplane.scheduling.models import TaskRun
from tests.chaos.helpers import (
    DeathWatch,
    TopicContents,
    assert_delivered_once,
    assert_one_live_attempt_per_shard,
    exit_record,
    start_crawl_on_victim,
    started_at,
    wait_for,
)

pytestmark = [pytest.mark.chaos, pytest.mark.scrapyd, pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.parametrize("victim_part", ["process-group", "scrapyd-only"])
def test_killed_node_loses_the_job_which_completes_elsewhere_once(
    victim_part,
    cp_web,
    cp_process,
    scrapyd_nodes,
    crawler_egg,
    fresh_demo_site,
    kafka_broker,
    kafka_topic,
):
    site = fresh_demo_site
    crawl = start_crawl_on_victim(
        scrapyd_nodes, crawler_egg, site, kafka_broker, kafka_topic, cp_process
    )
    victim, job = crawl.victim, crawl.job
    orphan = DeathWatch(victim.running_job(job.scrapyd_job_id)["pid"])

    if victim_part == "process-group":
        victim.process.signal_group(signal.SIGKILL)
        victim.process.proc.wait(timeout=10)
        orphan.wait(timeout=5)
    else:
        victim.kill()  # SIGKILL Scrapyd only: the crawl process lives on
        assert orphan.died_at is None

    def retried() -> Job | None:
        assert_one_live_attempt_per_shard()
        return Job.objects.filter(retry_of=job).first()

    retry = wait_for(retried, timeout=60, what="retry", processes=crawl.processes)
    crawl.finish()

    job.refresh_from_db()
    retry.refresh_from_db()
    assert job.state == Job.State.LOST, job.reason
    assert job.reason.startswith(f"node {crawl.fleet.row(victim).name} down since"), job.reason
    assert retry.state == Job.State.SUCCEEDED, retry.reason
    assert retry.node_id in crawl.other_rows
    assert crawl.run.state == TaskRun.State.SUCCEEDED

    # No two live runs: the old attempt had sent its last item before the retry's process
    # started, and had closed itself (or died) before. A stopped orphan reports its end, which
    # releases the retry, and its process exits a moment later: on a busy machine that moment
    # can outlast the retry's start, so the order is checked on the close, not the exit.
    contents = TopicContents.read(kafka_broker, kafka_topic)
    retry_started = started_at(exit_record(crawl.fleet.process(retry.node_id), retry))
    orphan_last_item = contents.produced[job.scrapyd_job_id][1]
    assert orphan_last_item < retry_started, (orphan_last_item, retry_started)
    assert retry_started <= contents.produced[retry.scrapyd_job_id][0]
    assert "had not stopped" not in retry.reason, retry.reason  # not forced beside a live one
    died_at = orphan.wait(timeout=30)
    if victim_part == "process-group":
        assert died_at < retry_started, (died_at, retry_started)
    if victim_part == "scrapyd-only":
        log = victim.dir / "logs" / "crawler" / "books" / f"{job.scrapyd_job_id}.log"
        text = log.read_text()
        assert "the control plane asked this crawl to stop" in text
        closed = re.search(
            r"^(\S+ \S+) \[scrapy.core.engine\] INFO: Spider closed "
            r"\(stopped_by_controlplane\)",
            text,
            re.M,
        )
        assert closed, text[-2000:]
        # Scrapy logs whole seconds: the close happened within the second it names.
        closed_at = datetime.fromisoformat(closed.group(1)).astimezone(UTC)  # local time
        assert closed_at <= retry_started, (closed_at, retry_started)

    # Kafka: the completed attempt delivered every item once; the killed one only duplicates.
    assert_delivered_once(contents, retry, crawl.expected)
    first = contents.by_job.get(job.scrapyd_job_id, [])
    assert first, "the killed attempt sent nothing before it died"
    assert set(first) <= crawl.expected
    assert max(Counter(first).values()) == 1
    assert contents.keys() == crawl.expected
