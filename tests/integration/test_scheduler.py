"""The scheduler: each fire recorded exactly once, across replicas, restarts and task changes.

In-process tests drive :class:`Scheduler` with a chosen clock; the others run real
``crawlfleet scheduler`` processes against the test database, with real Scrapyd nodes that queue
the jobs without launching them, so every job sent can be counted on the nodes.
"""

from __future__ import annotations

import itertools
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.utils import timezone

from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.jobs.runs import Fire, create_run, record_fires
from controlplane.loops.scheduler import Scheduler
from controlplane.scheduling import cron
from controlplane.scheduling.fireplan import MAX_LATE_RUNS, MAX_MISSED_RECORDS
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.common import start_schedulers, wait_until
from tests.fixtures.fleet import Fleet, pending_on_nodes, register_fleet, start_idle_nodes
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

SPIDER = "books"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def project_with_version(egg: EggFile | None = None) -> Project:
    """A project whose current version exists (no nodes needed to record runs)."""
    from controlplane.deploys.models import Version

    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="1", egg=b"", sha256="0" * 64, size=0, spiders=[SPIDER]
    )
    project.current_version = version
    project.save()
    return project


def new_task(project: Project, **fields: Any) -> Task:
    fields.setdefault("name", f"task-{Task.objects.count() + 1}")
    fields.setdefault("overlap", Task.Overlap.ALLOW)
    return Task.objects.create(project=project, spider=SPIDER, **fields)


def runs_of(task: Task) -> list[TaskRun]:
    return list(TaskRun.objects.filter(task=task).order_by("scheduled_for"))


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


# --- real processes -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idle_nodes(session_scrapyd_nodes: NodeFactory, crawler_egg: EggFile) -> list[ScrapydNode]:
    return start_idle_nodes(session_scrapyd_nodes, crawler_egg)


def test_a_stop_during_a_fire_still_sends_the_runs_it_recorded(
    transactional_db, idle_nodes, crawler_egg, settings
):
    """SIGTERM lands while a fire is being recorded: the runs it made go out before exit, not
    at some other replica's next tick."""
    settings.CRAWLFLEET_FIRE_LEAD = 0.0  # the one fire due, none ahead
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=(100, 100, 100), spiders=[SPIDER])
    task = new_task(fleet.project, cron="* * * * * *")
    scheduler = Scheduler()  # its dispatcher thread is never started: run() was not called
    scheduler.sync()
    scheduler.stop()  # the signal arrives mid-fire: the fire's own planning is skipped
    assert scheduler.fire_due(timezone.now() + timedelta(seconds=1)) == 1
    assert Job.objects.get(run__task=task).state == Job.State.QUEUED

    scheduler._shutdown()

    job = Job.objects.get(run__task=task)
    assert job.state == Job.State.PENDING, job.reason
    where = pending_on_nodes(fleet.nodes, [job.scrapyd_job_id])
    assert where[job.scrapyd_job_id] == [next(r.url for r in fleet.rows if r.pk == job.node_id)]
    assert scheduler.counters["dispatched"] == 1


def stop_gracefully(*procs: Any, timeout: float = 20) -> None:
    """SIGTERM, and insist that the process leaves cleanly (exit 0) on its own."""
    for proc in procs:
        proc.signal_group(signal.SIGTERM)
    for proc in procs:
        code = proc.proc.wait(timeout=timeout)
        assert code == 0, f"{proc.name} exited {code}:\n{proc.log_tail()}"
        assert "stopped" in proc.log_tail()


def assert_no_gaps(runs: list[TaskRun], step: timedelta = timedelta(seconds=1)) -> None:
    times = [r.scheduled_for for r in runs]
    assert len(times) == len(set(times)), "a fire was recorded twice"
    for before, after in itertools.pairwise(times):
        assert after - before == step, f"gap between {before} and {after}"


@pytest.mark.slow
def test_two_scheduler_replicas_dispatch_every_fire_exactly_once(
    cp_process, idle_nodes, crawler_egg
):
    fleet: Fleet = register_fleet(
        idle_nodes, crawler_egg, capacities=(100, 100, 100), spiders=[SPIDER]
    )
    tasks = [
        new_task(fleet.project, cron="* * * * * *", name=f"every-second-{i}") for i in range(4)
    ]
    replicas = [cp_process("scheduler", name=f"scheduler-{i}") for i in range(2)]
    wait_until(lambda: TaskRun.objects.count() >= 8, 30, "first fires")
    time.sleep(12)
    stop_gracefully(*replicas)

    all_jobs = list(Job.objects.select_related("run"))
    for task in tasks:
        runs = runs_of(task)
        assert len(runs) >= 10
        assert {r.state for r in runs} == {TaskRun.State.ACTIVE}
        assert_no_gaps(runs)
    # Each run has one job, sent once, and the node that has it is the one on record.
    assert len(all_jobs) == TaskRun.objects.count()
    assert {j.state for j in all_jobs} == {Job.State.PENDING}
    where = pending_on_nodes(fleet.nodes, [j.scrapyd_job_id for j in all_jobs])
    urls = {row.pk: row.url for row in fleet.rows}
    sent = Counter()
    for job in all_jobs:
        assert where[job.scrapyd_job_id] == [urls[job.node_id]]
        sent[job.node_id] += 1
    assert sum(len(nodes) for nodes in where.values()) == len(all_jobs)  # no duplicates
    assert max(sent.values()) - min(sent.values()) <= 2  # equal nodes, equal shares
    # Latency from the fire time to the node accepting the job.
    latency = [(j.dispatched_at - j.run.scheduled_for).total_seconds() for j in all_jobs]
    assert statistics.median(latency) < 0.5, latency
    assert max(latency) < 3.0, latency
    # Each replica counts the runs it created and the jobs nodes accepted from it: each once.
    counters = [
        re.search(
            r"stopped: (\d+) run\(s\) created, \d+ .* (\d+) job\(s\) dispatched", p.log_tail()
        )
        for p in replicas
    ]
    assert sum(int(c.group(1)) for c in counters) == TaskRun.objects.count()
    assert sum(int(c.group(2)) for c in counters) == len(all_jobs)


@pytest.mark.slow
def test_a_restarted_scheduler_process_catches_up_once(cp_process):
    task = new_task(project_with_version(), cron="* * * * * *", misfire_grace=3)
    first = cp_process("scheduler", name="before")
    wait_until(lambda: TaskRun.objects.filter(task=task).count() >= 3, 30, "first fires")
    stop_gracefully(first)
    paused_at = timezone.now()
    time.sleep(7 + settings.CRAWLFLEET_FIRE_LEAD)  # the first recorded its lead's fires ahead
    second = cp_process("scheduler", name="after")
    restarted_at = timezone.now()
    wait_until(
        lambda: TaskRun.objects.filter(
            task=task, scheduled_for__gt=restarted_at + timedelta(seconds=2)
        ).exists(),
        30,
        "fires after the restart",
    )
    stop_gracefully(second)

    runs = runs_of(task)
    assert_no_gaps(runs)
    states = "".join("m" if r.state == TaskRun.State.MISSED else "a" for r in runs)
    # Runs before the pause, fires missed during it, then the late ones and new ones run.
    assert re.fullmatch("a+m+a+", states), states
    missed = [r for r in runs if r.state == TaskRun.State.MISSED]
    assert len(missed) >= 3, states
    assert all(paused_at - timedelta(seconds=1) < r.scheduled_for < restarted_at for r in missed)
    # Fires the first replica recorded ahead of time, before its stop, are not late.
    ahead = paused_at + timedelta(seconds=settings.CRAWLFLEET_FIRE_LEAD)
    late = [
        r
        for r in runs
        if r.state == TaskRun.State.ACTIVE and ahead < r.scheduled_for <= restarted_at
    ]
    assert 1 <= len(late) <= MAX_LATE_RUNS, states


@pytest.mark.slow
def test_task_changes_are_picked_up_within_seconds(cp_process):
    project = project_with_version()
    task = new_task(project, cron="0 0 1 1 *")
    proc = cp_process("scheduler", name="watcher")
    wait_until(lambda: "starting" in proc.log_tail(), 20, "scheduler start")
    time.sleep(1)
    assert not TaskRun.objects.exists()

    # A new cron: fires start within a few seconds of the change.
    changed_at = timezone.now()
    task.cron = "* * * * * *"
    task.save()
    first = wait_until(
        lambda: TaskRun.objects.filter(task=task).order_by("scheduled_for").first(), 10, "runs"
    )
    assert first.created_at - changed_at < timedelta(seconds=4)

    # Disabled: fires stop within a few seconds.
    task.enabled = False
    task.save()
    disabled_at = timezone.now()
    time.sleep(4)
    settled = TaskRun.objects.filter(task=task).count()
    assert not TaskRun.objects.filter(
        task=task, scheduled_for__gt=disabled_at + timedelta(seconds=3)
    ).exists()
    time.sleep(2)
    assert TaskRun.objects.filter(task=task).count() == settled

    # Enabled again: fires resume, and the disabled stretch is not made up for or marked missed.
    task.enabled = True
    task.save()
    enabled_at = timezone.now()
    wait_until(
        lambda: TaskRun.objects.filter(task=task, scheduled_for__gt=enabled_at).count() >= 2,
        10,
        "runs after enabling",
    )
    gap = TaskRun.objects.filter(
        task=task,
        scheduled_for__gt=disabled_at + timedelta(seconds=3),
        scheduled_for__lt=enabled_at - timedelta(seconds=1),
    )
    assert not gap.exists(), list(gap)
    assert not TaskRun.objects.filter(task=task, state=TaskRun.State.MISSED).exists()

    # A new timezone and a deleted task are picked up too, without upsetting the process.
    other = new_task(project, cron="0 0 1 1 *", timezone="Asia/Tokyo")
    time.sleep(0.5)
    other.timezone = "Europe/Paris"
    other.cron = "* * * * * *"
    other.save()
    wait_until(lambda: TaskRun.objects.filter(task=other).exists(), 10, "runs of the new task")
    task.delete()
    time.sleep(3)
    assert proc.alive()
    stop_gracefully(proc)


# --- PostgreSQL -----------------------------------------------------------------------------------------
def _pg_worker(action: str) -> None:
    """Run in a process of its own on the PostgreSQL database: seed tasks, or report the runs."""
    import json

    if action == "seed":
        project = project_with_version()
        for index in range(40):  # enough that the replicas' transactions overlap
            new_task(project, cron="* * * * * *", name=f"pg-every-second-{index}")
        print("RESULT {}", flush=True)
    elif action == "report":
        runs = TaskRun.objects.order_by("task_id", "scheduled_for")
        rows = [[r.task_id, r.scheduled_for.isoformat(), r.state] for r in runs]
        jobs = Job.objects.count()
        print("RESULT " + json.dumps({"runs": rows, "jobs": jobs}), flush=True)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_replicas_on_postgresql_record_every_fire_once(postgres_url, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.fixtures.common import REPO_ROOT, VENV_BIN

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "CRAWLFLEET_DATABASE_URL": postgres_url,
        "CRAWLFLEET_DATA_DIR": str(tmp_path / "data"),
        "CRAWLFLEET_SECRET_KEY": "test-only-not-secret",
        "CRAWLFLEET_SCHEDULER_TICK": "0.5",
    }

    def run(argv: list[str]) -> str:
        proc = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def worker(action: str) -> dict[str, Any]:
        code = (
            "from controlplane.django_setup import setup; setup(); "
            f"from tests.integration.test_scheduler import _pg_worker; _pg_worker({action!r})"
        )
        output = run([sys.executable, "-c", code])
        line = next(x for x in output.splitlines() if x.startswith("RESULT "))
        return json.loads(line.removeprefix("RESULT "))

    run([str(VENV_BIN / "crawlfleet"), "manage", "migrate", "--verbosity", "0"])
    worker("seed")
    replicas = start_schedulers(2, env, tmp_path, "pg")
    try:
        # Both replicas up first (a busy machine takes seconds to import Django), then 8 s of
        # fires: at least 5 per task whatever the start-up took.
        wait_until(
            lambda: all("starting (tick" in proc.log_tail() for proc in replicas),
            timeout=60,
            what="both replicas started",
        )
        time.sleep(8)
        stop_gracefully(*replicas)
    finally:
        for proc in replicas:
            proc.stop()
    report = worker("report")
    by_task: dict[int, list[datetime]] = {}
    for task_id, scheduled_for, state in report["runs"]:
        assert state == TaskRun.State.ACTIVE
        by_task.setdefault(task_id, []).append(datetime.fromisoformat(scheduled_for))
    assert len(by_task) == 40
    for times in by_task.values():
        assert len(times) >= 5
        assert len(times) == len(set(times)), "a fire was recorded twice"
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times)), times
    assert report["jobs"] == len(report["runs"])
    # Each replica counts the runs it created: together, each run once.
    created = [
        int(re.search(r"stopped: (\d+) run\(s\) created", proc.log_tail()).group(1))
        for proc in replicas
    ]
    assert sum(created) == len(report["runs"]), created
