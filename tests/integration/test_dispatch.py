"""The dispatcher against three real Scrapyd nodes that queue jobs but never launch them.

The nodes poll their queues once an hour, so every job sent stays in the node's ``pending`` list:
what the dispatcher sent, and where, can be read back from the nodes themselves and compared
with the database.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment
from controlplane.jobs import dispatch as dispatcher
from controlplane.jobs.models import Job
from controlplane.jobs.runs import create_run
from controlplane.lib.procutil import free_port
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures import fleet as fleet_kit
from tests.fixtures.fleet import Fleet, pending_on_nodes, start_idle_nodes, start_run
from tests.fixtures.jobs import create_adhoc_run
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd]

SPIDER = "books"


# --- helpers -----------------------------------------------------------------------------------------
# The shared registration with this module's defaults: room for 50 jobs a node, the spider listed.
register_fleet = functools.partial(fleet_kit.register_fleet, capacities=50, spiders=[SPIDER])
make_task = functools.partial(fleet_kit.make_task, spider=SPIDER)


def assert_each_sent_once(fleet: Fleet, jobs: Iterable[Job]) -> None:
    """Every dispatched job is on exactly the node the database says, and on no other."""
    jobs = [Job.objects.get(pk=j.pk) for j in jobs]
    where = pending_on_nodes(fleet.nodes, [j.scrapyd_job_id for j in jobs])
    urls = {row.pk: row.url for row in fleet.rows}
    for job in jobs:
        expected = [urls[job.node_id]] if job.node_id is not None else []
        assert where[job.scrapyd_job_id] == expected, (job, where[job.scrapyd_job_id])


def placed(jobs: Iterable[Job]) -> Counter[str]:
    """Node name -> how many of these jobs are on it."""
    rows = Job.objects.filter(pk__in=[j.pk for j in jobs], node__isnull=False)
    return Counter(rows.values_list("node__name", flat=True))


def adhoc_jobs(fleet: Fleet, count: int, spider: str = SPIDER) -> list[Job]:
    return [create_adhoc_run(fleet.project, spider) for _ in range(count)]


def run_jobs(task: Task, count: int = 1) -> list[Job]:
    jobs = []
    for _ in range(count):
        jobs += list(start_run(task).jobs.all())
    return jobs


def finish(jobs: Iterable[Job]) -> None:
    """End jobs (and their runs) as the poller would once they have run."""
    jobs = list(jobs)
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(
        state=Job.State.SUCCEEDED, finished_at=timezone.now()
    )
    TaskRun.objects.filter(pk__in={j.run_id for j in jobs}).update(
        state=TaskRun.State.SUCCEEDED, finished_at=timezone.now()
    )


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idle_nodes(session_scrapyd_nodes: NodeFactory, crawler_egg: EggFile) -> list[ScrapydNode]:
    return start_idle_nodes(session_scrapyd_nodes, crawler_egg)


def node_names(fleet: Fleet) -> list[str]:
    return [row.name for row in fleet.rows]


# --- against real nodes -----------------------------------------------------------------------------
def test_spreads_by_capacity_and_a_full_fleet_waits_here(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(2, 4, 6))
    jobs = adhoc_jobs(fleet, 14)

    assert dispatcher.dispatch() == 12
    small, medium, large = node_names(fleet)
    assert placed(jobs) == {small: 2, medium: 4, large: 6}
    assert_each_sent_once(fleet, jobs)
    # The fleet is full: the last two wait in the control plane, not in some node's queue.
    waiting = Job.objects.filter(pk__in=[j.pk for j in jobs], state=Job.State.QUEUED)
    assert waiting.count() == 2
    assert all(job.node_id is None for job in waiting)
    assert dispatcher.dispatch() == 0

    # A slot frees up on the small node: exactly one more job goes there.
    finish([Job.objects.filter(pk__in=[j.pk for j in jobs], node__name=small).first()])
    assert dispatcher.dispatch() == 1
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], state=Job.State.QUEUED).count() == 1
    assert_each_sent_once(fleet, jobs)


def test_weights_shift_the_share(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(30, 30, 30), weights=(1, 2, 3))
    jobs = adhoc_jobs(fleet, 12)
    assert dispatcher.dispatch() == 12
    one, two, three = node_names(fleet)
    assert placed(jobs) == {one: 2, two: 4, three: 6}
    assert_each_sent_once(fleet, jobs)


def test_selectors_by_tags_and_by_name(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, tags=(["eu"], ["eu", "big"], ["us"]))
    eu, eu_big, us = node_names(fleet)
    by_tag = make_task(fleet, selector=Task.Selector.TAGS, selector_tags=["eu"])
    by_tags = make_task(fleet, selector=Task.Selector.TAGS, selector_tags=["eu", "big"])
    by_name = make_task(fleet, selector=Task.Selector.NODES)
    by_name.selector_nodes.set([fleet.rows[2]])
    anywhere = make_task(fleet)
    # Jobs go out oldest first: the unrestricted ones spread evenly, the rest where allowed.
    groups = {task.name: run_jobs(task, 6) for task in (anywhere, by_tag, by_tags, by_name)}

    assert dispatcher.dispatch() == 24
    assert placed(groups[anywhere.name]) == {eu: 2, eu_big: 2, us: 2}
    assert placed(groups[by_tag.name]) == {eu: 3, eu_big: 3}
    assert placed(groups[by_tags.name]) == {eu_big: 6}
    assert placed(groups[by_name.name]) == {us: 6}
    assert_each_sent_once(fleet, [j for group in groups.values() for j in group])


def test_a_job_only_goes_where_its_version_is_deployed(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg)
    NodeDeployment.objects.filter(node=fleet.rows[0]).update(state=NodeDeployment.State.FAILED)
    NodeDeployment.objects.filter(node=fleet.rows[1]).update(state=NodeDeployment.State.PENDING)
    jobs = adhoc_jobs(fleet, 5)
    assert dispatcher.dispatch() == 5
    assert placed(jobs) == {fleet.rows[2].name: 5}
    # With no node holding the version at all, jobs wait.
    NodeDeployment.objects.filter(node=fleet.rows[2]).update(state=NodeDeployment.State.REMOVED)
    late = adhoc_jobs(fleet, 1)
    assert dispatcher.dispatch() == 0
    assert Job.objects.get(pk=late[0].pk).state == Job.State.QUEUED


def test_unhealthy_and_disabled_nodes_get_nothing(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg)
    Node.objects.filter(pk=fleet.rows[0].pk).update(state=Node.State.DOWN)
    Node.objects.filter(pk=fleet.rows[1].pk).update(enabled=False)
    jobs = adhoc_jobs(fleet, 4)
    assert dispatcher.dispatch() == 4
    assert placed(jobs) == {fleet.rows[2].name: 4}


def test_a_draining_node_gets_no_new_job_but_keeps_and_tracks_its_own(db, idle_nodes, crawler_egg):
    from controlplane.jobs.tracking import Tracker, nodes_to_poll
    from controlplane.nodes.models import HealthSample
    from controlplane.nodes.services import update_node

    fleet = register_fleet(idle_nodes[:2], crawler_egg)
    draining, other = fleet.rows
    before = adhoc_jobs(fleet, 2)
    assert dispatcher.dispatch() == 2
    assert placed(before) == {draining.name: 1, other.name: 1}

    update_node(draining, {"draining": True})
    after = adhoc_jobs(fleet, 4)
    assert dispatcher.dispatch() == 4
    assert placed(after) == {other.name: 4}
    assert placed(before) == {draining.name: 1, other.name: 1}  # its job stays where it is
    assert_each_sent_once(fleet, before + after)

    # Still polled: its job moves along and its health is checked and sampled.
    assert draining.pk in {n.pk for n in nodes_to_poll()}
    Tracker().poll_node(Node.objects.get(pk=draining.pk))
    kept = Job.objects.get(pk__in=[j.pk for j in before], node=draining)
    assert kept.state == Job.State.PENDING
    assert HealthSample.objects.filter(node=draining, ok=True).exists()

    # Undrained, it is the least-loaded node again and takes the next job.
    update_node(Node.objects.get(pk=draining.pk), {"draining": False})
    last = adhoc_jobs(fleet, 1)
    assert dispatcher.dispatch() == 1
    assert placed(last) == {draining.name: 1}


def test_a_retry_avoids_the_previous_node_while_another_can_take_it(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(50, 1, 1))
    first, second, third = fleet.rows
    retry = adhoc_jobs(fleet, 1)[0]
    Job.objects.filter(pk=retry.pk).update(avoid_nodes=[first.pk])
    assert dispatcher.dispatch() == 1
    retry.refresh_from_db()
    assert retry.node_id in (second.pk, third.pk)  # though the first node is the least loaded

    # Every other node is full: the retry runs on the previous node rather than not at all.
    filler = adhoc_jobs(fleet, 1)[0]
    Job.objects.filter(pk=filler.pk).update(avoid_nodes=[first.pk])
    assert dispatcher.dispatch() == 1
    last = adhoc_jobs(fleet, 1)[0]
    Job.objects.filter(pk=last.pk).update(avoid_nodes=[first.pk])
    assert dispatcher.dispatch() == 1
    last.refresh_from_db()
    assert last.node_id == first.pk
    assert_each_sent_once(fleet, [retry, filler, last])


def test_fanout_shards_go_to_different_nodes(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(50, 50, 50))
    task = make_task(fleet, fanout=3)
    jobs = run_jobs(task)
    assert len(jobs) == 3
    assert dispatcher.dispatch() == 3
    assert sorted(placed(jobs).values()) == [1, 1, 1]
    on_node = pending_on_nodes(fleet.nodes, [j.scrapyd_job_id for j in jobs])
    crawl_ids = set()
    for node in fleet.nodes:
        for entry in node.listjobs()["pending"]:
            if entry["id"] in on_node:
                crawl_ids.add(entry["args"]["crawl_id"])
    assert crawl_ids == {jobs[0].run.crawl_id}


def test_a_refusal_requeues_the_job_for_another_node(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(50, 1, 1))
    job = adhoc_jobs(fleet, 1, spider="no_such_spider")[0]
    assert dispatcher.dispatch() == 0
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.node_id is None
    assert job.avoid_nodes == [fleet.rows[0].pk]
    assert "refused by" in job.reason
    assert "no_such_spider" in job.reason
    assert job.not_before > timezone.now()
    assert dispatcher.dispatch() == 0  # not offered again before its delay
    # After the delay it goes to a node that has not refused it yet.
    Job.objects.filter(pk=job.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    assert dispatcher.dispatch() == 0
    job.refresh_from_db()
    assert len(job.avoid_nodes) == 2


def test_an_unreachable_node_leaves_the_job_for_the_poller(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes[:0], crawler_egg)
    dead = Node.objects.create(
        name="dead", url=f"http://127.0.0.1:{free_port()}", state=Node.State.UP, capacity=4
    )
    NodeDeployment.objects.create(
        node=dead, version=fleet.version, state=NodeDeployment.State.DEPLOYED
    )
    job = adhoc_jobs(fleet, 1)[0]
    assert dispatcher.dispatch() == 0
    job.refresh_from_db()
    # Maybe it got there, maybe not: the poller asks the node, and re-queues after a grace.
    assert job.state == Job.State.DISPATCHING
    assert job.node_id == dead.pk
    assert job.dispatched_at is not None


def test_the_spider_gets_its_version_its_report_url_and_a_token_only_we_can_check(
    db, idle_nodes, crawler_egg, settings
):
    settings.CRAWLFLEET_PUBLIC_URL = "http://control.example:8000"
    fleet = register_fleet(idle_nodes, crawler_egg)
    task = make_task(fleet, args={"start_url": "http://shop.example/"}, settings={"X": "1"})
    job = run_jobs(task)[0]
    assert dispatcher.dispatch() == 1
    job.refresh_from_db()
    assert job.state == Job.State.PENDING
    assert job.log_url.endswith(f"/logs/{fleet.project.name}/{SPIDER}/{job.scrapyd_job_id}.log")
    entry = next(
        e
        for node in fleet.nodes
        for e in node.listjobs()["pending"]
        if e["id"] == job.scrapyd_job_id
    )
    assert entry["version"] == fleet.version.version
    assert entry["args"]["start_url"] == "http://shop.example/"
    sent = entry["settings"]
    assert sent["X"] == "1"
    assert sent["CRAWLFLEET_REPORT_URL"] == (
        f"http://control.example:8000/api/v1/report/{job.scrapyd_job_id}"
    )
    assert job.check_report_token(sent["CRAWLFLEET_JOB_TOKEN"])


def test_overlap_queue_holds_a_run_until_the_earlier_one_ends(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg)
    task = make_task(fleet, overlap=Task.Overlap.QUEUE)
    now = timezone.now().replace(microsecond=0)
    first = create_run(task, now - timedelta(minutes=2))
    second = create_run(task, now - timedelta(minutes=1))
    assert first.state == second.state == TaskRun.State.ACTIVE
    assert dispatcher.dispatch() == 1
    assert first.jobs.get().state == Job.State.PENDING
    assert second.jobs.get().state == Job.State.QUEUED
    assert dispatcher.dispatch() == 0
    finish(first.jobs.all())
    assert dispatcher.dispatch() == 1
    assert second.jobs.get().state == Job.State.PENDING


def test_overlap_skip_and_allow(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg)
    now = timezone.now().replace(microsecond=0)
    skip = make_task(fleet, overlap=Task.Overlap.SKIP)
    allow = make_task(fleet, overlap=Task.Overlap.ALLOW)
    skip_first = create_run(skip, now - timedelta(minutes=2))
    skip_second = create_run(skip, now - timedelta(minutes=1))
    allow_first = create_run(allow, now - timedelta(minutes=2))
    allow_second = create_run(allow, now - timedelta(minutes=1))
    assert skip_first.state == TaskRun.State.ACTIVE
    assert skip_second.state == TaskRun.State.SKIPPED
    assert "overlap policy: skip" in skip_second.reason
    assert not skip_second.jobs.exists()
    assert dispatcher.dispatch() == 3
    for run in (skip_first, allow_first, allow_second):
        assert run.jobs.get().state == Job.State.PENDING
    # Once the first run has ended the next fire runs again.
    finish(skip_first.jobs.all())
    assert create_run(skip, now).state == TaskRun.State.ACTIVE


def test_concurrent_dispatchers_never_send_a_job_twice(transactional_db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(30, 30, 30))
    jobs = adhoc_jobs(fleet, 120)
    barrier = threading.Barrier(4)
    accepted: list[int] = []

    def replica() -> None:
        from django.db import connection

        barrier.wait()
        try:
            accepted.append(dispatcher.dispatch())
            accepted.append(dispatcher.dispatch())
        finally:
            connection.close()

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(accepted) == 90  # the fleet's capacity, not more
    assert Job.objects.filter(state=Job.State.PENDING).count() == 90
    assert Job.objects.filter(state=Job.State.QUEUED).count() == 30
    assert sorted(placed(jobs).values()) == [30, 30, 30]
    where = pending_on_nodes(fleet.nodes, [j.scrapyd_job_id for j in jobs])
    assert sorted(len(nodes) for nodes in where.values()) == [0] * 30 + [1] * 90
    assert_each_sent_once(fleet, jobs)
