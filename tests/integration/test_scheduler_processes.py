"""The scheduler as real ``crawlfleet scheduler`` processes: replicas, restarts, task changes.

They run against the test database (and PostgreSQL), with real Scrapyd nodes that queue the jobs
without launching them, so every job sent can be counted on the nodes. In-process tests of the
fire recording are in test_scheduler.py.
"""

from __future__ import annotations

import itertools
import re
import signal
import statistics
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.loops.scheduler import Scheduler
from controlplane.scheduling.fireplan import MAX_LATE_RUNS
from controlplane.scheduling.models import TaskRun
from tests.fixtures.common import start_schedulers, wait_until
from tests.fixtures.fleet import Fleet, pending_on_nodes, register_fleet, start_idle_nodes
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode
from tests.fixtures.tasks import SPIDER, new_task, project_with_version, runs_of


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
            f"from tests.integration.test_scheduler_processes import _pg_worker; _pg_worker({action!r})"
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
