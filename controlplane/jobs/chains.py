"""Chains: when a run of a task ends, start the tasks that run after it.

A task names an upstream task (``Task.after_task``) and a condition (``after_condition``): on
success (succeeded or degraded), on clean success (succeeded only) or always (any end:
succeeded, degraded, failed, cancelled). Runs that never ran (missed, skipped, failed at once for
want of a version) are recorded already closed and start nothing.

:func:`start_downstream` is called by :func:`controlplane.jobs.completion.close_run` inside the
transaction that closes the run, by the one caller whose conditional update closed it, so the
close and the downstream runs are committed together. The unique (task, upstream_run) constraint
on chained runs makes it idempotent anyway: asked again for the same upstream run, it starts
nothing. Downstream runs go through :func:`controlplane.jobs.runs.create_run`, so each task's
overlap policy, version and fan-out apply as for any other run.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from controlplane.jobs.runs import create_run
from controlplane.scheduling.models import UPSTREAM_ARGS, Task, TaskRun

logger = logging.getLogger(__name__)


def upstream_args(run: TaskRun) -> dict[str, str]:
    """The spider arguments a ``pass_upstream`` task gets: the upstream run's id, task, state
    and figures (summed over every shard and attempt of a fan-out run)."""
    from controlplane.jobs.completion import progress  # completion calls this module

    figures = progress(run)
    values = {
        "upstream_run": str(run.pk),
        "upstream_task": run.task.name if run.task_id else "",
        "upstream_state": str(run.state),
        "upstream_items": str(figures.items),
        "upstream_pages": str(figures.pages),
        "upstream_errors": str(figures.errors),
    }
    return {key: values[key] for key in UPSTREAM_ARGS}


def downstream_tasks(run: TaskRun) -> list[Task]:
    """The enabled tasks whose condition the ended ``run`` meets."""
    if not run.task_id:
        return []
    tasks = (
        Task.objects.filter(after_task_id=run.task_id, enabled=True)
        .select_related("project__current_version", "version")
        .defer("project__current_version__egg", "version__egg")
        .order_by("pk")
    )
    return [task for task in tasks if task.chain_matches(run.state)]


def start_downstream(run: TaskRun) -> list[TaskRun]:
    """Start a run of each task that runs after ``run``'s task; returns the runs started.

    A downstream task that cannot be started (an unexpected error) is logged and skipped, so it
    never keeps the upstream run from closing."""
    started: list[TaskRun] = []
    args: dict[str, str] | None = None
    for task in downstream_tasks(run):
        if task.pass_upstream and args is None:
            args = upstream_args(run)
        try:
            with transaction.atomic():
                chained = create_run(
                    task,
                    timezone.now(),
                    TaskRun.Trigger.CHAIN,
                    upstream=run,
                    extra_args=args if task.pass_upstream else None,
                )
        except Exception:
            logger.exception("could not start %s after run %s", task.name, run.pk)
            continue
        if chained is None:
            logger.info("%s was already started after run %s", task.name, run.pk)
            continue
        logger.info(
            "run %s of %s (%s) started after run %s of %s (%s)",
            chained.pk,
            task.name,
            chained.state,
            run.pk,
            run.task,
            run.state,
        )
        started.append(chained)
    return started
