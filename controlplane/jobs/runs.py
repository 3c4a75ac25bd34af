"""Turning a fire (or a manual request) into a TaskRun and its Jobs, exactly once.

The unique (task, scheduled_for) constraint on cron runs is what makes a fire happen once, however
many schedulers race for it: the loser's insert fails and it does nothing. The scheduler records
the fires of many tasks at once with :func:`record_fires` (one insert that skips the fires already
recorded); :func:`create_run` is the same rule for one fire.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.jobs.rowinserts import insert_all, insert_new
from controlplane.scheduling.models import Task, TaskRun

MISSED_REASON = "fire time passed more than misfire_grace ago"
SKIPPED_REASON = "the previous run is still going (overlap policy: skip)"


class NoVersion(Exception):
    """The project has nothing deployed to run."""


@dataclass(frozen=True)
class Fire:
    """One fire time of a task; ``missed_reason`` set means record it as missed, not run it."""

    task: Task
    scheduled_for: datetime
    missed_reason: str = ""


def resolve_version(project: Project, pinned: Version | None) -> Version:
    version = pinned or project.current_version or project.latest_version()
    if version is None:
        raise NoVersion(f"project {project.name!r} has no deployed version")
    return version


def previous_run_active(task: Task, before: TaskRun | None = None) -> bool:
    runs = TaskRun.objects.filter(task=task, state=TaskRun.State.ACTIVE)
    if before is not None:
        runs = runs.exclude(pk=before.pk).filter(created_at__lte=before.created_at)
    return runs.exists()


# A late worker of a finished shared crawl must not start it all over again.
SHARED_DONE_MARKER_TTL = "86400"


def fanout_settings(task: Task) -> dict[str, str]:
    """Settings every shard of a fan-out run gets: one Redis, and the finished-crawl marker."""
    shared = {"SHARED_DONE_MARKER_TTL": SHARED_DONE_MARKER_TTL}
    if django_settings.CRAWLFLEET_REDIS_URL:
        shared["REDIS_URL"] = django_settings.CRAWLFLEET_REDIS_URL
    return {**shared, **task.settings}  # a task's own settings win


def _jobs_for(
    run: TaskRun,
    task: Task,
    version: Version,
    priority: float | None = None,
    extra_args: dict[str, str] | None = None,
) -> list[Job]:
    args = {**task.args, **(extra_args or {})}
    job_settings = dict(task.settings)
    if task.fanout > 1:
        args["crawl_id"] = run.crawl_id
        job_settings = fanout_settings(task)
    return [
        Job(
            run=run,
            task=task,
            shard=shard,
            project=task.project,
            spider=task.spider,
            version=version,
            args=args,
            settings=job_settings,
            priority=task.priority if priority is None else priority,
        )
        for shard in range(task.fanout)
    ]


def _prepare(
    task: Task,
    scheduled_for: datetime,
    trigger: str,
    *,
    missed_reason: str,
    previous_active: bool,
) -> tuple[TaskRun, Version | None]:
    """The run to insert for one fire and the version its jobs use (None: no jobs)."""
    run = TaskRun(task=task, trigger=trigger, scheduled_for=scheduled_for)
    now = timezone.now()
    if missed_reason:
        run.state, run.reason, run.finished_at = TaskRun.State.MISSED, missed_reason, now
        return run, None
    if task.overlap == Task.Overlap.SKIP and previous_active:
        run.state, run.reason, run.finished_at = TaskRun.State.SKIPPED, SKIPPED_REASON, now
        return run, None
    try:
        version = resolve_version(task.project, task.version)
    except NoVersion as exc:
        run.state, run.reason, run.finished_at = TaskRun.State.FAILED, str(exc), now
        return run, None
    if task.fanout > 1:
        run.crawl_id = f"{task.name}-{uuid.uuid4().hex[:12]}"
    return run, version


def create_run(
    task: Task,
    scheduled_for: datetime,
    trigger: str = TaskRun.Trigger.CRON,
    *,
    missed: bool = False,
    reason: str = "",
    priority: float | None = None,
    upstream: TaskRun | None = None,
    extra_args: dict[str, str] | None = None,
) -> TaskRun | None:
    """Record one fire of ``task``; None if another scheduler already recorded it (or, for a
    chained run, if this upstream run already started one). Its jobs get ``priority``, or the
    task's; ``extra_args`` are added to the task's spider arguments."""
    try:
        with transaction.atomic():
            run, version = _prepare(
                task,
                scheduled_for,
                trigger,
                missed_reason=(reason or MISSED_REASON) if missed else "",
                previous_active=task.overlap == Task.Overlap.SKIP and previous_run_active(task),
            )
            run.upstream_run = upstream
            run.save()
            if version is not None:
                Job.objects.bulk_create(_jobs_for(run, task, version, priority, extra_args))
            return run
    except IntegrityError:
        return None


def _tasks_with_active_runs(tasks: Iterable[Task]) -> set[int]:
    ids = {t.pk for t in tasks if t.overlap == Task.Overlap.SKIP}
    if not ids:
        return set()
    return set(
        TaskRun.objects.filter(task_id__in=ids, state=TaskRun.State.ACTIVE).values_list(
            "task_id", flat=True
        )
    )


def record_fires(fires: Sequence[Fire], now: datetime | None = None) -> list[TaskRun]:
    """Record many cron fires at once; returns the runs this call created.

    One insert of the runs that skips every fire already recorded (another replica won it, or
    this one crashed after inserting: the unique (task, scheduled_for) constraint refuses it, and
    ``ON CONFLICT DO NOTHING`` leaves it alone), then one insert of the new runs' jobs. The jobs
    of a fire after ``now`` (recorded ahead of time) are not due before it (``not_before``).
    """
    now = now or timezone.now()
    if not fires:
        return []
    ordered = sorted(fires, key=lambda f: (f.task.pk, f.scheduled_for))
    active = _tasks_with_active_runs(f.task for f in ordered)
    prepared: list[tuple[TaskRun, Version | None, Task]] = []
    for fire in ordered:
        run, version = _prepare(
            fire.task,
            fire.scheduled_for,
            TaskRun.Trigger.CRON,
            missed_reason=fire.missed_reason,
            previous_active=fire.task.pk in active,
        )
        if version is not None:
            active.add(fire.task.pk)  # a later fire of a "skip" task in this batch is skipped
        prepared.append((run, version, fire.task))
    with transaction.atomic():
        created = insert_new(
            TaskRun, [run for run, _, _ in prepared], key=("task_id", "scheduled_for")
        )
        mine = {id(run) for run in created}
        jobs = [
            job
            for run, version, task in prepared
            if version is not None and id(run) in mine
            for job in _jobs_for(run, task, version)
        ]
        for job in jobs:
            if job.run.scheduled_for > now:
                job.not_before = job.run.scheduled_for
        insert_all(Job, jobs)
    return [run for run, _, _ in prepared if id(run) in mine]


def create_adhoc_run(
    project: Project,
    spider: str,
    *,
    version: Version | None = None,
    args: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
    trigger: str = TaskRun.Trigger.API,
    job_id: str | None = None,
    priority: float = 0.0,
) -> Job:
    """A one-off run of ``spider`` outside any task (Scrapyd-compatible ``schedule.json``).

    It is queued for the dispatcher like any other job and recovers by the project's policy.
    """
    version = resolve_version(project, version)
    with transaction.atomic():
        run = TaskRun.objects.create(task=None, trigger=trigger, scheduled_for=timezone.now())
        job = Job(
            run=run,
            project=project,
            spider=spider,
            version=version,
            args=dict(args or {}),
            settings=dict(settings or {}),
            priority=priority,
        )
        if job_id:
            job.scrapyd_job_id = job_id
        job.save()
    return job
