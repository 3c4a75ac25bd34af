"""Turning a fire (or a manual request) into a TaskRun and its Jobs, exactly once."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.scheduling.models import Task, TaskRun


class NoVersion(Exception):
    """The project has nothing deployed to run."""


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


def _jobs_for(run: TaskRun, task: Task, version: Version) -> list[Job]:
    args = dict(task.args)
    if task.fanout > 1:
        args["crawl_id"] = run.crawl_id
    return [
        Job(
            run=run,
            shard=shard,
            project=task.project,
            spider=task.spider,
            version=version,
            args=args,
            settings=dict(task.settings),
        )
        for shard in range(task.fanout)
    ]


def create_run(
    task: Task,
    scheduled_for: datetime,
    trigger: str = TaskRun.Trigger.CRON,
    *,
    missed: bool = False,
) -> TaskRun | None:
    """Record one fire of ``task``; None if another scheduler already recorded it.

    The unique (task, scheduled_for) constraint on cron runs is what makes a fire happen once,
    however many schedulers race for it.
    """
    try:
        with transaction.atomic():
            run = TaskRun(task=task, trigger=trigger, scheduled_for=scheduled_for)
            if missed:
                run.state = TaskRun.State.MISSED
                run.reason = "fire time passed more than misfire_grace ago"
                run.finished_at = timezone.now()
                run.save()
                return run
            if task.overlap == Task.Overlap.SKIP and previous_run_active(task):
                run.state = TaskRun.State.SKIPPED
                run.reason = "the previous run is still going (overlap policy: skip)"
                run.finished_at = timezone.now()
                run.save()
                return run
            try:
                version = resolve_version(task.project, task.version)
            except NoVersion as exc:
                run.state = TaskRun.State.FAILED
                run.reason = str(exc)
                run.finished_at = timezone.now()
                run.save()
                return run
            if task.fanout > 1:
                run.crawl_id = f"{task.name}-{uuid.uuid4().hex[:12]}"
            run.save()
            Job.objects.bulk_create(_jobs_for(run, task, version))
            return run
    except IntegrityError:
        return None


def create_adhoc_run(
    project: Project,
    spider: str,
    *,
    version: Version | None = None,
    args: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
    trigger: str = TaskRun.Trigger.API,
    job_id: str | None = None,
) -> Job:
    """A one-off run outside any task (Scrapyd-compatible schedule.json, manual runs)."""
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
        )
        if job_id:
            job.scrapyd_job_id = job_id
        job.save()
    return job
