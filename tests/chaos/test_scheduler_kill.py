"""One of two scheduler replicas SIGKILLed during a burst of per-second fires.

Four tasks fire every second (``*/1 * * * * *``) with two real ``crawlfleet scheduler``
replicas; a few seconds in, one replica's process group is SIGKILLed, possibly in the middle of
recording a fire. Every second of the window must be recorded once per task, none missed and none
doubled: a killed replica's open transaction is rolled back by the database, and the survivor
finds the fire still after the task's bookmark on its next wake-up (well within one second, far
inside the tasks' ``misfire_grace`` of 5 s, so nothing may be recorded as missed).

Tolerance: none on the grid. The window is from the first fire each task recorded to the last
one before the survivor is stopped; the kill must fall at least 2 s inside it on both sides.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.scheduling.models import Task, TaskRun
from tests.chaos.helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.slow]
TASKS = 4


def per_second_tasks() -> list[Task]:
    """Tasks of a project whose version exists; no node is needed to record their fires."""
    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="1", egg=b"", sha256="0" * 64, size=0, spiders=["books"]
    )
    project.current_version = version
    project.save()
    return [
        Task.objects.create(
            name=f"every-second-{i}",
            project=project,
            spider="books",
            cron="*/1 * * * * *",
            misfire_grace=5,
            overlap=Task.Overlap.ALLOW,
        )
        for i in range(TASKS)
    ]


def test_a_killed_scheduler_replica_misses_and_doubles_no_fire(cp_process):
    tasks = per_second_tasks()
    doomed, survivor = (cp_process("scheduler", name=f"scheduler-{i}") for i in range(2))
    wait_for(
        # Fires already due: the schedulers record each one CRAWLFLEET_FIRE_LEAD seconds ahead.
        lambda: TaskRun.objects.filter(scheduled_for__lte=timezone.now()).count() >= 3 * TASKS,
        timeout=30,
        what="first fires",
        processes=[doomed, survivor],
    )
    time.sleep(1.5)
    doomed.signal_group(signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    killed_at = timezone.now()
    time.sleep(5)
    assert survivor.alive(), survivor.log_tail()
    survivor.signal_group(signal.SIGTERM)
    assert survivor.proc.wait(timeout=20) == 0, survivor.log_tail()

    assert not TaskRun.objects.filter(state=TaskRun.State.MISSED).exists()
    for task in tasks:
        fires = list(
            TaskRun.objects.filter(task=task)
            .order_by("scheduled_for")
            .values_list("scheduled_for", flat=True)
        )
        doubled = [at for at, count in Counter(fires).items() if count > 1]
        assert not doubled, f"{task.name}: recorded twice: {doubled}"
        gaps = [
            (before, after)
            for before, after in itertools.pairwise(fires)
            if after - before != timedelta(seconds=1)
        ]
        assert not gaps, f"{task.name}: fires missing between {gaps}"
        assert fires[0] <= killed_at - timedelta(seconds=2), (fires[0], killed_at)
        assert fires[-1] >= killed_at + timedelta(seconds=2), (fires[-1], killed_at)
    # One job per fire: a half-recorded fire left no orphan job nor a run without one.
    per_run = Counter(Job.objects.values_list("run_id", flat=True))
    assert set(per_run.values()) == {1}
    assert len(per_run) == TaskRun.objects.count()
