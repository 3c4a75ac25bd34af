"""Fires recorded ahead of time (``CRAWLFLEET_FIRE_LEAD``): their jobs are planned at once, held
by the senders, and reach real nodes at the fire time, not before it and not a tick after it."""

from __future__ import annotations

import functools
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.jobs import dispatch as dispatcher
from controlplane.jobs import placement
from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text
from controlplane.loops.scheduler import Scheduler
from controlplane.scheduling.models import TaskRun
from tests.fixtures import fleet as fleet_kit
from tests.fixtures.fleet import pending_on_nodes, start_idle_nodes
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd]

SPIDER = "books"
register_fleet = functools.partial(fleet_kit.register_fleet, capacities=10, spiders=[SPIDER])


@pytest.fixture(scope="module")
def idle_nodes(session_scrapyd_nodes: NodeFactory, crawler_egg: EggFile) -> list[ScrapydNode]:
    return start_idle_nodes(session_scrapyd_nodes, crawler_egg, count=2)


def fires_ahead(fleet: fleet_kit.Fleet) -> list[TaskRun]:
    """A per-second task, and the runs of its next fires, which a scheduler has just recorded
    ahead of time (those within its lead)."""
    task = fleet_kit.make_task(fleet, spider=SPIDER, cron="* * * * * *")
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    now = timezone.now()
    assert scheduler.fire_due(now) >= 1
    runs = list(TaskRun.objects.filter(task=task, scheduled_for__gt=now).order_by("scheduled_for"))
    assert runs, "nothing recorded ahead"
    assert all(r.scheduled_for <= now + timedelta(seconds=2) for r in runs)
    return runs


def test_a_fire_is_recorded_ahead_and_its_job_waits_for_it(db, idle_nodes, crawler_egg, settings):
    settings.CRAWLFLEET_FIRE_LEAD = 2.0
    fleet = register_fleet(idle_nodes, crawler_egg)
    for run in fires_ahead(fleet):
        job = run.jobs.get()
        assert job.state == Job.State.QUEUED
        assert job.not_before == run.scheduled_for
        assert run.created_at < run.scheduled_for
        assert waiting_text(job).startswith("due at ")


def test_jobs_planned_ahead_reach_their_nodes_at_their_fires(db, idle_nodes, crawler_egg, settings):
    settings.CRAWLFLEET_FIRE_LEAD = 2.0
    fleet = register_fleet(idle_nodes, crawler_egg)
    runs = fires_ahead(fleet)
    jobs = {run.pk: run.jobs.get() for run in runs}
    placements = placement.plan()
    # Claimed now, ahead of their fires.
    assert sorted(p.job.pk for p in placements) == sorted(j.pk for j in jobs.values())
    assert {j.state for j in Job.objects.filter(pk__in=[p.job.pk for p in placements])} == {
        Job.State.DISPATCHING
    }

    answered = threading.Event()
    sends = dispatcher.Sends(on_answer=answered.set)
    sends.submit(placements)
    first = runs[0]
    if timezone.now() < first.scheduled_for - timedelta(milliseconds=200):
        # Held by the senders: no node has them yet.
        where = pending_on_nodes(idle_nodes, [j.scrapyd_job_id for j in jobs.values()])
        assert all(nodes == [] for nodes in where.values()), where
    while sends.pending:
        assert answered.wait(timeout=10)
        answered.clear()
        sends.record_answered()
    where = pending_on_nodes(idle_nodes, [j.scrapyd_job_id for j in jobs.values()])
    for run in runs:
        job = Job.objects.get(pk=jobs[run.pk].pk)
        assert job.state == Job.State.PENDING
        assert run.scheduled_for <= job.dispatched_at < run.scheduled_for + timedelta(seconds=1)
        assert len(where[job.scrapyd_job_id]) == 1


def test_without_a_lead_nothing_is_recorded_or_planned_early(db, idle_nodes, crawler_egg, settings):
    settings.CRAWLFLEET_FIRE_LEAD = 0.0
    fleet = register_fleet(idle_nodes, crawler_egg)
    task = fleet_kit.make_task(fleet, spider=SPIDER, cron="* * * * * *")
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    now = timezone.now()
    scheduler.fire_due(now)
    assert not TaskRun.objects.filter(task=task, scheduled_for__gt=now).exists()
    # A job that is not due yet (a retry's backoff) is left queued until it is.
    fleet_kit.start_run(task)
    later = timezone.now() + timedelta(seconds=30)
    Job.objects.filter(task=task, state=Job.State.QUEUED).update(not_before=later)
    assert placement.plan() == []
    settings.CRAWLFLEET_FIRE_LEAD = 2.0
    assert placement.plan() == []  # 30 s away is beyond the lead too
