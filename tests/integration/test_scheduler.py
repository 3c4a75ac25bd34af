"""The scheduler in-process: each fire recorded exactly once, across restarts and races.

These drive :class:`Scheduler` and the fire recording with a chosen clock against the test
database. Real ``crawlfleet scheduler`` processes (replicas, restarts, task changes, PostgreSQL)
are in test_scheduler_processes.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.runs import Fire, create_run, record_fires
from controlplane.loops.scheduler import Scheduler
from controlplane.scheduling import cron
from controlplane.scheduling.fireplan import MAX_LATE_RUNS, MAX_MISSED_RECORDS
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.tasks import new_task, project_with_version, runs_of


# --- recording fires in-process ----------------------------------------------------------------------
def test_a_restarted_scheduler_records_old_fires_missed_and_runs_the_recent_one_once(db):
    task = new_task(project_with_version(), cron="* * * * *", misfire_grace=60)
    now = timezone.now().replace(second=30, microsecond=0)
    Task.objects.filter(pk=task.pk).update(fired_through=now - timedelta(minutes=10, seconds=30))
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()

    assert scheduler.fire_due(now) == 10  # 9 missed + 1 run
    runs = runs_of(task)
    assert [r.state for r in runs] == [TaskRun.State.MISSED] * 9 + [TaskRun.State.ACTIVE]
    assert runs[-1].scheduled_for == now - timedelta(seconds=30)
    assert runs[-1].jobs.get().state == Job.State.QUEUED
    task.refresh_from_db()
    assert task.fired_through == now - timedelta(seconds=30)

    # Waking again, or another replica waking, finds nothing left to do.
    assert scheduler.fire_due(now) == 0
    other = Scheduler(dispatch_jobs=False)
    other.sync()
    assert other.fire_due(now + timedelta(seconds=20)) == 0
    assert len(runs_of(task)) == 10


def test_a_week_long_outage_costs_a_bounded_number_of_records(db):
    task = new_task(project_with_version(), cron="* * * * * *", misfire_grace=60)
    now = timezone.now().replace(microsecond=0)
    Task.objects.filter(pk=task.pk).update(fired_through=now - timedelta(days=7))
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    started = time.monotonic()
    scheduler.fire_due(now)
    assert time.monotonic() - started < 3.0
    states = Counter(r.state for r in runs_of(task))
    ahead = int(settings.CRAWLFLEET_FIRE_LEAD)  # the next fires, recorded ahead of time
    assert states == {
        TaskRun.State.ACTIVE: MAX_LATE_RUNS + ahead,
        TaskRun.State.MISSED: MAX_MISSED_RECORDS,
    }


def test_a_new_task_counts_from_its_creation(db):
    task = new_task(project_with_version(), cron="*/10 * * * * *")
    created = timezone.now().replace(microsecond=0) - timedelta(seconds=25)
    Task.objects.filter(pk=task.pk).update(created_at=created)
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    now = created + timedelta(seconds=25)
    scheduler.fire_due(now)
    fires = [r.scheduled_for for r in runs_of(task)]
    horizon = now + timedelta(seconds=settings.CRAWLFLEET_FIRE_LEAD)  # with those due soon
    expected = cron.fire_times_between(task.trigger(), created, horizon)
    assert fires == expected
    assert len(fires) in (2, 3)


def test_fires_of_a_task_with_an_invalid_cron_are_not_attempted(db, caplog):
    task = new_task(project_with_version(), cron="* * * * * *")
    Task.objects.filter(pk=task.pk).update(cron="99 * * * *")  # bypassing validation
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    assert scheduler.fire_due(timezone.now() + timedelta(minutes=5)) == 0
    assert "is not scheduled: cron expression '99 * * * *'" in caplog.text


def test_a_chained_only_task_without_cron_is_left_alone(db, caplog):
    project = project_with_version()
    upstream = new_task(project, cron="* * * * * *")
    chained = new_task(project, cron="", after_task=upstream)
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    assert scheduler.schedules[chained.pk].trigger is None
    assert scheduler.schedules[chained.pk].next_fire is None
    assert scheduler.fire_due(timezone.now() + timedelta(seconds=5)) > 0
    assert runs_of(chained) == []  # only its upstream fired; it runs when those runs end
    assert "not scheduled" not in caplog.text


def test_a_fire_whose_transaction_failed_is_tried_again(db, monkeypatch):
    from controlplane.loops import firerecording

    task = new_task(project_with_version(), cron="* * * * *")
    now = timezone.now().replace(second=10, microsecond=0)
    Task.objects.filter(pk=task.pk).update(fired_through=now - timedelta(minutes=1))
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()

    def locked(fires: list[Fire], now: datetime | None = None) -> list[TaskRun]:
        raise OperationalError("database is locked")

    monkeypatch.setattr(firerecording, "record_fires", locked)
    with pytest.raises(OperationalError):
        scheduler.fire_due(now)
    monkeypatch.setattr(firerecording, "record_fires", record_fires)
    scheduler.sync()
    assert scheduler.fire_due(now + timedelta(seconds=1)) == 1
    assert [r.scheduled_for for r in runs_of(task)] == [now - timedelta(seconds=10)]


def test_a_database_error_is_logged_and_retried_not_fatal(db, caplog):
    scheduler = Scheduler(dispatch_jobs=False)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return "done"

    assert scheduler._guarded("fire", flaky) is None
    assert "database is locked" in caplog.text
    assert scheduler._guarded("fire", flaky) == "done"


# --- exactly once under races ---------------------------------------------------------------------------
def race(workers: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` on ``workers`` threads released at once; each has its own connection."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_create_run_races_record_one_run_per_fire(transactional_db):
    task = new_task(project_with_version(), cron="* * * * *", fanout=2)
    fire = timezone.now().replace(second=0, microsecond=0)

    results = race(8, lambda _: create_run(Task.objects.get(pk=task.pk), fire))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert TaskRun.objects.filter(task=task).count() == 1
    assert Job.objects.filter(run__task=task).count() == 2  # both shards, once


def test_record_fires_races_record_each_fire_once(transactional_db):
    project = project_with_version()
    tasks = [new_task(project, cron="* * * * * *") for _ in range(5)]
    base = timezone.now().replace(microsecond=0)
    fires = [base - timedelta(seconds=s) for s in range(20)]

    def replica(index: int) -> int:
        # Overlapping slices, in different orders: every fire is wanted by several replicas.
        mine = fires[index * 2 : index * 2 + 12]
        if index % 2:
            mine = mine[::-1]
        fresh = list(Task.objects.filter(pk__in=[t.pk for t in tasks]))
        return len(record_fires([Fire(task, at) for task in fresh for at in mine]))

    created = race(6, replica)
    assert sum(created) == 5 * 20
    rows = TaskRun.objects.filter(task__in=tasks).values_list("task_id", "scheduled_for")
    assert len(rows) == len(set(rows)) == 100
    assert Job.objects.filter(run__task__in=tasks).count() == 100


def test_a_burst_too_big_for_the_lead_is_recorded_earlier(db):
    """100 tasks due at one instant, at a pace of 50 ms a fire: 7.5 s of recording with the
    margin, more than the 2 s lead, so the scheduler starts that much before the fire."""
    project = project_with_version()
    real_now = timezone.now()
    fire = (real_now + timedelta(seconds=40)).replace(microsecond=0)
    fire -= timedelta(seconds=fire.second % 30)  # the next :00 or :30, 10-40 s away
    tasks = [new_task(project, cron="*/30 * * * * *") for _ in range(100)]
    Task.objects.update(fired_through=fire - timedelta(seconds=30))
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    scheduler.seconds_per_fire = 0.05
    now = fire - timedelta(seconds=6)
    assert scheduler.lead_now(now) == pytest.approx(7.5)
    assert scheduler.lead_now(now - timedelta(seconds=30)) == pytest.approx(2.0)  # out of sight

    assert scheduler.fire_due(now) == 100  # 6 s before the fire, inside the 7.5 s lead
    assert all([r.scheduled_for for r in runs_of(task)] == [fire] for task in tasks)
    assert set(Job.objects.values_list("not_before", flat=True)) == {fire}  # held until then
    # Timed on this burst, faster than assumed: the estimate comes down halfway, not all the way.
    assert 0.025 < scheduler.seconds_per_fire < 0.05


def test_without_a_lead_a_big_burst_still_waits_for_its_time(db, settings):
    settings.CRAWLFLEET_FIRE_LEAD = 0.0
    project = project_with_version()
    fire = (timezone.now() + timedelta(seconds=40)).replace(microsecond=0)
    fire -= timedelta(seconds=fire.second % 30)
    for _ in range(60):
        new_task(project, cron="*/30 * * * * *")
    Task.objects.update(fired_through=fire - timedelta(seconds=30))
    scheduler = Scheduler(dispatch_jobs=False)
    scheduler.sync()
    scheduler.seconds_per_fire = 0.05
    assert scheduler.lead_now(fire - timedelta(seconds=1)) == 0.0
    assert scheduler.fire_due(fire - timedelta(seconds=1)) == 0
