"""A node partitioned away, alive but unreachable, then back.

The node's whole process group (Scrapyd and its crawl) is frozen with SIGSTOP: its port still
accepts connections (the kernel completes the handshake) but nothing answers, as behind a
blackholing firewall. The job is declared lost and retried elsewhere. While the retry runs, the
node is thawed (SIGCONT): the returning crawl is told to stop by its first heartbeat reply, the
lost job stays lost (the returning node does not revive it), and the control plane never tracks
two live attempts. A frozen process cannot be stopped, so it does live alongside the retry; what
is bounded is how much it does once it is back: it stops within a few seconds of the thaw.
"""

from __future__ import annotations

import re
import signal
from datetime import timedelta

import pytest

from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import TaskRun
from tests.chaos.helpers import (
    DeathWatch,
    TopicContents,
    assert_delivered_once,
    assert_one_live_attempt_per_shard,
    start_crawl_on_victim,
    utcnow,
    wait_for,
)
from tests.fixtures.fleet import job_state

pytestmark = [pytest.mark.chaos, pytest.mark.scrapyd, pytest.mark.kafka, pytest.mark.slow]


def test_partitioned_node_loses_its_job_and_the_returning_orphan_stops(
    cp_web, cp_process, scrapyd_nodes, crawler_egg, fresh_demo_site, kafka_broker, kafka_topic
):
    site = fresh_demo_site
    crawl = start_crawl_on_victim(
        scrapyd_nodes, crawler_egg, site, kafka_broker, kafka_topic, cp_process
    )
    victim, job = crawl.victim, crawl.job
    orphan = DeathWatch(victim.running_job(job.scrapyd_job_id)["pid"])

    victim.process.signal_group(signal.SIGSTOP)
    try:

        def retry_running() -> Job | None:
            assert_one_live_attempt_per_shard()
            retry = Job.objects.filter(retry_of=job).first()
            return retry if retry and job_state(retry, Job.State.RUNNING)() else None

        retry = wait_for(retry_running, timeout=60, what="running retry", processes=crawl.processes)
        job.refresh_from_db()
        assert job.state == Job.State.LOST, job.reason
        lost_reason = job.reason
        assert orphan.died_at is None  # frozen, not dead
    finally:
        thawed_at = utcnow()
        victim.process.signal_group(signal.SIGCONT)

    died_at = orphan.wait(timeout=20)
    assert died_at - thawed_at < timedelta(seconds=10), (thawed_at, died_at)
    crawl.finish()
    job.refresh_from_db()
    retry.refresh_from_db()
    assert job.state == Job.State.LOST
    assert job.reason == lost_reason
    assert retry.state == Job.State.SUCCEEDED, retry.reason
    assert retry.node_id in crawl.other_rows
    assert crawl.run.state == TaskRun.State.SUCCEEDED
    wait_for(
        lambda: Node.objects.get(pk=crawl.fleet.row(victim).pk).state == Node.State.UP,
        timeout=30,
        what="the node back up",
    )
    log = victim.dir / "logs" / "crawler" / "books" / f"{job.scrapyd_job_id}.log"
    text = log.read_text()
    assert "the control plane asked this crawl to stop" in text
    # Its node, back up, may cancel it first (Scrapyd's SIGTERM closes it as "shutdown"); the
    # heartbeat's stop then finds the spider already closing. Either way it closed itself.
    assert re.search(r"Closing spider \((stopped_by_controlplane|shutdown)\)", text), text[-2000:]

    contents = TopicContents.read(kafka_broker, kafka_topic)
    assert_delivered_once(contents, retry, crawl.expected)
    assert contents.keys() == crawl.expected
