"""A node SIGKILLed mid-job, with the whole control plane running as real processes.

Two ways to lose a node: its whole process group (Scrapyd and the crawl die together), and its
Scrapyd alone (the crawl lives on as an orphan, which must be told to stop before the retry
starts). Either way the job is marked lost, retried on another node, and completes; every item
of the completed attempt is in Kafka once per item id, and the orphan's process had ended before
the retry's process started (the retry node's exit record against the moment the orphan was
seen dead, sampled every 20 ms).

This case was first ``test_killed_scrapyd_loses_the_job_which_completes_elsewhere_and_the_orphan_
stops`` in tests/integration/test_failures.py; it moved here, with Kafka and the group kill added.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import TaskRun
from demo.bookshop import Book
from tests.chaos.helpers import (
    DeathWatch,
    TopicContents,
    assert_delivered_once,
    assert_one_live_attempt_per_shard,
    exit_record,
    slow_kafka_books_task,
    started_at,
    wait_for,
)
from tests.fixtures.fleet import register_fleet, run_closed, start_run

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
    victim, *others = scrapyd_nodes(3, max_proc=2, poll_interval=0.2)
    for node in (victim, *others):
        node.deploy(crawler_egg)
    fleet = register_fleet([victim, *others], crawler_egg)
    other_rows = [fleet.row(n).pk for n in others]
    kafka_broker.create_topic(kafka_topic)
    site = fresh_demo_site
    expected = {Book(n).upc for n in range(1, site.config.books + 1)}
    task = slow_kafka_books_task(fleet, site, kafka_broker, kafka_topic)
    # The first attempt goes to the victim: the other nodes are closed for now.
    Node.objects.filter(pk__in=other_rows).update(enabled=False)
    # A node is declared lost 2 s after it stops answering (5 s in the other process tests).
    fast_loss = {"CRAWLFLEET_NODE_LOST_GRACE": "2"}
    processes = [
        cp_process("scheduler", name="scheduler", env=fast_loss),
        cp_process("poller", name="poller", env=fast_loss),
    ]
    run = start_run(task)
    job = run.jobs.get()

    def sent_some_items() -> bool:
        job.refresh_from_db()
        beating = job.state == Job.State.RUNNING and job.last_heartbeat is not None
        return beating and len(TopicContents.read(kafka_broker, kafka_topic).keys()) >= 3

    wait_for(sent_some_items, timeout=60, what="items in Kafka", processes=processes)
    assert job.node_id == fleet.row(victim).pk
    orphan = DeathWatch(victim.running_job(job.scrapyd_job_id)["pid"])
    Node.objects.filter(pk__in=other_rows).update(enabled=True)

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

    retry = wait_for(retried, timeout=60, what="retry", processes=processes)
    site.config.delay = 0.0
    wait_for(
        lambda: assert_one_live_attempt_per_shard() or run_closed(run)(),
        timeout=90,
        what="closed run",
        processes=processes,
    )

    job.refresh_from_db()
    retry.refresh_from_db()
    assert job.state == Job.State.LOST, job.reason
    assert job.reason.startswith(f"node {fleet.row(victim).name} down since"), job.reason
    assert retry.state == Job.State.SUCCEEDED, retry.reason
    assert retry.node_id in other_rows
    assert run.state == TaskRun.State.SUCCEEDED

    # No two live runs: the old attempt had sent its last item before the retry's process
    # started, and its process is gone. (A stopped orphan reports its end, which releases the
    # retry, and then takes a few more milliseconds to exit: its process may outlive the
    # retry's start by that much, so the process death is bounded loosely.)
    contents = TopicContents.read(kafka_broker, kafka_topic)
    retry_started = started_at(exit_record(fleet.process(retry.node_id), retry))
    orphan_last_item = contents.produced[job.scrapyd_job_id][1]
    assert orphan_last_item < retry_started, (orphan_last_item, retry_started)
    assert retry_started <= contents.produced[retry.scrapyd_job_id][0]
    died_at = orphan.wait(timeout=30)
    assert (died_at - retry_started).total_seconds() < 1.0, (died_at, retry_started)
    if victim_part == "scrapyd-only":
        log = victim.dir / "logs" / "crawler" / "books" / f"{job.scrapyd_job_id}.log"
        text = log.read_text()
        assert "the control plane asked this crawl to stop" in text
        assert "Spider closed (stopped_by_controlplane)" in text

    # Kafka: the completed attempt delivered every item once; the killed one only duplicates.
    assert_delivered_once(contents, retry, expected)
    first = contents.by_job.get(job.scrapyd_job_id, [])
    assert first, "the killed attempt sent nothing before it died"
    assert set(first) <= expected
    assert max(Counter(first).values()) == 1
    assert contents.keys() == expected
