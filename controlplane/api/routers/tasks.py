"""Tasks: CRUD with the model's full validation, next-run previews and manual runs.

The rules are :mod:`controlplane.scheduling.editing`'s, shared with the dashboard: every problem
comes back at once, keyed by field.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from ninja import Body, Query, Router, Status

from controlplane.api.auth import OPERATOR, VIEWER
from controlplane.api.errors import ApiError, not_found
from controlplane.api.queueschemas import RunNowIn
from controlplane.api.taskschemas import CronQuery, PreviewOut, RunOut, TaskIn, TaskOut, TaskPatch
from controlplane.jobs import taskactions
from controlplane.scheduling import cron, editing
from controlplane.scheduling.editing import PLAIN_FIELDS
from controlplane.scheduling.models import Task, TaskRun

router = Router(tags=["tasks"])
MAX_PREVIEW = 100


def task_out(task: Task) -> dict[str, Any]:
    try:
        upcoming = task.next_runs(1) if task.enabled else []
    except ValidationError:
        upcoming = []
    body = {key: getattr(task, key) for key in PLAIN_FIELDS}
    body.update(
        id=task.pk,
        project=task.project.name,
        version=task.version.version if task.version else None,
        selector_nodes=sorted(n.name for n in task.selector_nodes.all()),
        after_task=task.after_task.name if task.after_task else None,
        downstream_tasks=sorted(t.name for t in task.downstream.all()),
        next_run=upcoming[0] if upcoming else None,
        created_at=task.created_at,
        updated_at=task.updated_at,
    )
    return body


def run_out(run: TaskRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "task": run.task.name if run.task else None,
        "trigger": run.trigger,
        "state": run.state,
        "reason": run.reason,
        "scheduled_for": run.scheduled_for,
        "upstream_run": run.upstream_run_id,
        "jobs": sorted(run.jobs.values_list("pk", flat=True)),
    }


def _get(task_id: int) -> Task:
    task = (
        Task.objects.select_related("project", "version", "after_task").filter(pk=task_id).first()
    )
    if task is None:
        raise not_found(f"task {task_id}")
    return task


@router.get("", response=list[TaskOut], auth=VIEWER)
def list_tasks(
    request: HttpRequest, project: str | None = None, enabled: bool | None = None
) -> list[dict[str, Any]]:
    tasks = Task.objects.select_related("project", "version", "after_task").prefetch_related(
        "selector_nodes", "downstream"
    )
    if project:
        tasks = tasks.filter(project__name=project)
    if enabled is not None:
        tasks = tasks.filter(enabled=enabled)
    return [task_out(t) for t in tasks]


@router.post("", response={201: TaskOut}, auth=OPERATOR)
def create_task(request: HttpRequest, payload: TaskIn) -> Status:
    task = editing.save_task(Task(), payload.dict(), actor=request.actor)
    return Status(201, task_out(task))


@router.get("/{task_id}", response=TaskOut, auth=VIEWER)
def get_task(request: HttpRequest, task_id: int) -> dict:
    return task_out(_get(task_id))


def _update(request: HttpRequest, task_id: int, data: dict[str, Any]) -> dict:
    return task_out(editing.save_task(_get(task_id), data, actor=request.actor))


@router.put("/{task_id}", response=TaskOut, auth=OPERATOR)
def replace_task(request: HttpRequest, task_id: int, payload: TaskIn) -> dict:
    return _update(request, task_id, payload.dict())


@router.patch("/{task_id}", response=TaskOut, auth=OPERATOR)
def update_task(request: HttpRequest, task_id: int, payload: TaskPatch) -> dict:
    return _update(request, task_id, payload.dict(exclude_unset=True))


@router.delete("/{task_id}", response={204: None}, auth=OPERATOR)
def delete_task(request: HttpRequest, task_id: int) -> Status:
    """Refused while a run of the task is active (its jobs would lose their task)."""
    taskactions.delete_task(_get(task_id), actor=request.actor)
    return Status(204, None)


@router.get("/{task_id}/preview", response=PreviewOut, auth=VIEWER)
def preview(request: HttpRequest, task_id: int, count: int = 5) -> dict:
    task = _get(task_id)
    count = max(1, min(count, MAX_PREVIEW))
    return {"cron": task.cron, "timezone": task.timezone, "next_runs": task.next_runs(count)}


@router.post("/{task_id}/run", response={201: RunOut}, auth=OPERATOR, summary="Run now")
def run_now(request: HttpRequest, task_id: int, payload: Body[RunNowIn | None] = None) -> Status:
    """A manual run; the task's overlap policy still applies (the run may be skipped).
    ``priority`` (-100..100) overrides the task's for this run."""
    priority = payload.priority if payload is not None else None
    run = taskactions.run_now(_get(task_id), actor=request.actor, priority=priority)
    return Status(201, run_out(run))


cron_router = Router(tags=["tasks"])


@cron_router.get("/preview", response=PreviewOut, auth=VIEWER, summary="Preview any expression")
def preview_expression(request: HttpRequest, query: Query[CronQuery]) -> dict:
    try:
        trigger = cron.parse(query.cron, query.timezone)
    except ValidationError as exc:
        key = "timezone" if "timezone" in exc.messages[0] else "cron"
        raise ApiError(422, " ".join(exc.messages), fields={key: exc.messages}) from None
    count = max(1, min(query.count, MAX_PREVIEW))
    return {
        "cron": query.cron,
        "timezone": query.timezone,
        "next_runs": cron.next_fire_times(trigger, timezone.now(), count),
    }
