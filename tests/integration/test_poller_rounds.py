"""What a poll round keeps and reads once, against a real node: one kept-alive client per node
across rounds (surviving the node's restart), and the on-node jobs of every node read in one
query before any node is asked for its jobs (:mod:`controlplane.jobs.onnode`)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.events import event_raised
from controlplane.jobs.models import Job
from controlplane.jobs.nodeview import NodeSession
from controlplane.jobs.onnode import RoundJobs
from controlplane.jobs.tracking import Tracker
from controlplane.lib.scrapyd import ScrapydClient
from controlplane.loops.poller import Poller
from controlplane.nodes.models import Node
from tests.fixtures.fleet import Fleet, register_fleet, start_idle_nodes
from tests.fixtures.jobs import create_adhoc_run

pytestmark = [pytest.mark.scrapyd]


@pytest.fixture
def idle(transactional_db, fast, scrapyd_nodes, failproject_egg) -> Fleet:
    """One private node that queues jobs and never launches them, registered."""
    nodes = start_idle_nodes(scrapyd_nodes, failproject_egg, count=1, spider="ok")
    return register_fleet(nodes, failproject_egg)


def connections_opened(client: ScrapydClient) -> int:
    pools = client.session.get_adapter(client.url).poolmanager.pools
    keys = pools.keys()  # a urllib3 container: it has no iterator of its own
    return sum(pools[key].num_connections for key in keys)


def test_a_kept_client_survives_a_node_restart(idle):
    poller = Poller()
    raised: list[str] = []

    def record(sender, event, **kwargs) -> None:
        raised.append(event.kind)

    event_raised.connect(record)
    try:
        row = idle.rows[0]
        for _ in range(3):
            assert poller.cycle().polled == [row.name]
        client = poller.tracker.clients.get(row)
        assert connections_opened(client) == 1  # three rounds, six calls, one connection

        idle.nodes[0].restart()  # stopped and started on the same port
        result = poller.cycle()
        assert result.polled == [row.name]
        row.refresh_from_db()
        assert (row.state, row.consecutive_failures, row.last_error) == (Node.State.UP, 0, "")
        assert raised == []  # neither node_down nor node_back
        assert poller.tracker.clients.get(row) is client  # the same client, reconnected
    finally:
        event_raised.disconnect(record)
        poller.close()


def test_a_changed_node_address_gets_a_new_client(idle):
    poller = Poller()
    try:
        row = idle.rows[0]
        first = poller.tracker.clients.get(row)
        row.url = row.url + "/"
        assert poller.tracker.clients.get(row) is not first
        Node.objects.filter(pk=row.pk).delete()
        poller.cycle()
        assert len(poller.tracker.clients) == 0  # no longer polled: its client is closed
    finally:
        poller.close()


def pending_job(fleet: Fleet, node: Node) -> Job:
    """A job queued on the real node, its row pending there."""
    job = create_adhoc_run(fleet.project, "ok")
    ScrapydClient(node.url, timeout=30).schedule(
        fleet.project.name, "ok", version=fleet.version.version, jobid=job.scrapyd_job_id
    )
    job.transition([Job.State.QUEUED], Job.State.PENDING, node=node, dispatched_at=timezone.now())
    return job


def test_a_job_dispatched_after_the_rounds_read_is_not_taken_for_a_stray(idle):
    poller = Poller()
    try:
        row = idle.rows[0]
        round_jobs = RoundJobs.read()  # the round's read, before the job exists
        job = pending_job(idle, row)
        poller.tracker.poll_node(row, round_jobs.for_node(row.pk, max_age=60))
        listed = [entry["id"] for entry in idle.nodes[0].listjobs()["pending"]]
        assert job.scrapyd_job_id in listed  # not cancelled as a stray
        job.refresh_from_db()
        assert (job.state, job.cancel_requested) == (Job.State.PENDING, False)

        # The next round reads it, and a job the database has ended is stopped as before.
        ended = pending_job(idle, row)
        Job.objects.filter(pk=ended.pk).update(state=Job.State.LOST)
        poller.cycle()
        listed = [entry["id"] for entry in idle.nodes[0].listjobs()["pending"]]
        assert job.scrapyd_job_id in listed
        assert ended.scrapyd_job_id not in listed
    finally:
        poller.close()


def test_a_snapshot_older_than_a_round_is_not_used():
    stale = RoundJobs([], read_at=time.monotonic() - 120)
    assert stale.for_node(1, max_age=60) is None
    assert RoundJobs([], read_at=time.monotonic()).for_node(1, max_age=60) == []


def test_a_heartbeat_that_came_during_the_round_counts(idle):
    """The round's row says the job went silent long ago; the current row has a fresh heartbeat:
    it is not stopped as hung."""
    row = idle.rows[0]
    job = create_adhoc_run(idle.project, "ok")
    now = timezone.now()
    job.transition([Job.State.QUEUED], Job.State.RUNNING, node=row, started_at=now)
    Job.objects.filter(pk=job.pk).update(last_heartbeat=now)
    read = RoundJobs.read().for_node(row.pk, max_age=60)
    assert read is not None
    [mine] = read
    mine.last_heartbeat = now - timedelta(hours=1)  # as an older read would have it
    Tracker().watch_running(mine, NodeSession(row), {}, timezone.now())
    job.refresh_from_db()
    assert (job.state, job.cancel_requested) == (Job.State.RUNNING, False)
