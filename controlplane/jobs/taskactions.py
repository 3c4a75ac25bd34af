"""What an operator does to a task that involves its jobs: run it now, delete it. Audited."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from controlplane.accounts import audit
from controlplane.jobs.models import MAX_PRIORITY, MIN_PRIORITY, Job
from controlplane.jobs.runs import create_run
from controlplane.refusals import Refused
from controlplane.scheduling.editing import snapshot
from controlplane.scheduling.models import Task, TaskRun


def run_now(task: Task, actor: audit.Actor | None = None, priority: float | None = None) -> TaskRun:
    """A manual run; the task's overlap policy still applies (the run may be recorded skipped).
    ``priority`` (-100..100) overrides the task's for this run's jobs."""
    if priority is not None:
        check_priority(priority)
    run = create_run(task, timezone.now(), TaskRun.Trigger.MANUAL, priority=priority)
    if run is None:  # only cron fires can collide
        raise Refused("this run was already recorded", code="conflict", status=409)
    detail = {"priority": priority} if priority is not None else {}
    audit.record(actor, "task.run_now", task.name, run=run.pk, state=run.state, **detail)
    return run


def delete_task(task: Task, actor: audit.Actor | None = None) -> None:
    """Refused while a job of the task is active (it would lose its task), and while other
    tasks run after it (they would lose their trigger)."""
    downstream = sorted(task.downstream.values_list("name", flat=True))
    if downstream:
        raise Refused(
            f"task {task.name} has tasks that run after it ({', '.join(downstream)}); "
            "change or delete them first",
            code="conflict",
            status=409,
        )
    if Job.objects.filter(run__task=task, state__in=Job.ACTIVE).exists():
        raise Refused(
            f"task {task.name} has active jobs; cancel them or disable the task",
            code="conflict",
            status=409,
        )
    with transaction.atomic():
        audit.record(actor, "task.delete", task.name, fields=snapshot(task))
        task.delete()


def check_priority(priority: float) -> None:
    """Refuse (422) a run priority outside MIN_PRIORITY..MAX_PRIORITY, or not a number."""
    if not isinstance(priority, int | float) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        message = f"priority must be a number from {MIN_PRIORITY} to {MAX_PRIORITY}"
        raise Refused(message, fields={"priority": [message]})
