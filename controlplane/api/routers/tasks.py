"""Tasks: CRUD with the model's full validation, next-run previews and manual runs.

Validation is the model's (``full_clean``), so the API, the admin and the dashboard refuse the
same things with the same messages: every problem comes back at once, keyed by field.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status

from controlplane.api.auth import OPERATOR, VIEWER
from controlplane.api.errors import ApiError, field_errors, not_found, summary
from controlplane.api.schemas import CronQuery, PreviewOut, RunOut, TaskIn, TaskOut, TaskPatch
from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.jobs.runs import create_run
from controlplane.nodes.models import Node
from controlplane.scheduling import cron
from controlplane.scheduling.models import Task, TaskRun

router = Router(tags=["tasks"])
MAX_PREVIEW = 100
# Fields copied as they are; project, version and selector_nodes are looked up by name.
_PLAIN = [
    "name",
    "spider",
    "args",
    "settings",
    "cron",
    "timezone",
    "enabled",
    "selector",
    "selector_tags",
    "max_attempts",
    "retry_backoff",
    "retry_backoff_factor",
    "max_runtime",
    "overlap",
    "fanout",
    "error_threshold",
    "misfire_grace",
]


def task_out(task: Task) -> dict[str, Any]:
    try:
        upcoming = task.next_runs(1) if task.enabled else []
    except ValidationError:
        upcoming = []
    body = {key: getattr(task, key) for key in _PLAIN}
    body.update(
        id=task.pk,
        project=task.project.name,
        version=task.version.version if task.version else None,
        selector_nodes=sorted(n.name for n in task.selector_nodes.all()),
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
        "jobs": sorted(run.jobs.values_list("pk", flat=True)),
    }


def _get(task_id: int) -> Task:
    task = Task.objects.select_related("project", "version").filter(pk=task_id).first()
    if task is None:
        raise not_found(f"task {task_id}")
    return task


def _apply(task: Task, data: dict[str, Any]) -> list[Node] | None:
    """Set ``data`` on ``task`` and validate it all; returns the selected nodes to store."""
    errors: dict[str, list[str]] = {}
    for key in _PLAIN:
        if key in data:
            if data[key] is None and key != "max_runtime":
                errors.setdefault(key, []).append("cannot be null")
                continue
            setattr(task, key, data[key])
    project_changed = False
    if "project" in data:
        project = Project.objects.filter(name=data["project"] or "").first()
        if project is None:
            errors.setdefault("project", []).append(f"unknown project {data['project']!r}")
        else:
            project_changed = task.project_id != project.pk
            task.project = project
    if "version" in data:
        wanted = data["version"]
        if not wanted:
            task.version = None
        elif task.project_id and "project" not in errors:
            version = task.project.versions.filter(version=wanted, deleted_at__isnull=True).first()
            if version is None:
                errors.setdefault("version", []).append(
                    f"{task.project.name} has no version {wanted!r}"
                )
            else:
                task.version = version
    elif project_changed:
        task.version = None  # a version pinned in the old project cannot stay
    nodes: list[Node] | None = None
    if "selector_nodes" in data:
        names = data["selector_nodes"] or []
        found = {n.name: n for n in Node.objects.filter(name__in=names)}
        unknown = sorted(set(names) - set(found))
        if unknown:
            errors.setdefault("selector_nodes", []).append(f"unknown node(s): {', '.join(unknown)}")
        nodes = list(found.values())
        if task.selector == Task.Selector.NODES and not nodes and not unknown:
            errors.setdefault("selector_nodes", []).append("select at least one node")
    elif task.selector == Task.Selector.NODES and (not task.pk or not task.selector_nodes.exists()):
        errors.setdefault("selector_nodes", []).append("select at least one node")

    exclude = [key for key in ("project", "version") if key in errors]
    try:
        task.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        for key, messages in field_errors(exc).items():
            errors.setdefault(key, []).extend(m for m in messages if m not in errors.get(key, []))
    if errors:
        raise ApiError(422, summary(errors), fields=errors)
    clash = Task.objects.filter(name=task.name)
    if task.pk:
        clash = clash.exclude(pk=task.pk)
    if clash.exists():
        raise ApiError(
            409, f"a task named {task.name!r} exists", fields={"name": ["already exists"]}
        )
    return nodes


@router.get("", response=list[TaskOut], auth=VIEWER)
def list_tasks(
    request: HttpRequest, project: str | None = None, enabled: bool | None = None
) -> list[dict[str, Any]]:
    tasks = Task.objects.select_related("project", "version").prefetch_related("selector_nodes")
    if project:
        tasks = tasks.filter(project__name=project)
    if enabled is not None:
        tasks = tasks.filter(enabled=enabled)
    return [task_out(t) for t in tasks]


@router.post("", response={201: TaskOut}, auth=OPERATOR)
def create_task(request: HttpRequest, payload: TaskIn) -> Status:
    task = Task()
    data = payload.dict()
    nodes = _apply(task, data)
    with transaction.atomic():
        task.save()
        task.selector_nodes.set(nodes or [])
    return Status(201, task_out(task))


@router.get("/{task_id}", response=TaskOut, auth=VIEWER)
def get_task(request: HttpRequest, task_id: int) -> dict:
    return task_out(_get(task_id))


def _update(task_id: int, data: dict[str, Any]) -> dict:
    task = _get(task_id)
    nodes = _apply(task, data)
    with transaction.atomic():
        task.save()
        if nodes is not None:
            task.selector_nodes.set(nodes)
    return task_out(task)


@router.put("/{task_id}", response=TaskOut, auth=OPERATOR)
def replace_task(request: HttpRequest, task_id: int, payload: TaskIn) -> dict:
    return _update(task_id, payload.dict())


@router.patch("/{task_id}", response=TaskOut, auth=OPERATOR)
def update_task(request: HttpRequest, task_id: int, payload: TaskPatch) -> dict:
    return _update(task_id, payload.dict(exclude_unset=True))


@router.delete("/{task_id}", response={204: None}, auth=OPERATOR)
def delete_task(request: HttpRequest, task_id: int) -> Status:
    """Refused while a run of the task is active (its jobs would lose their task)."""
    task = _get(task_id)
    if Job.objects.filter(run__task=task, state__in=Job.ACTIVE).exists():
        raise ApiError(409, f"task {task.name} has active jobs; cancel them or disable the task")
    task.delete()
    return Status(204, None)


@router.get("/{task_id}/preview", response=PreviewOut, auth=VIEWER)
def preview(request: HttpRequest, task_id: int, count: int = 5) -> dict:
    task = _get(task_id)
    count = max(1, min(count, MAX_PREVIEW))
    return {"cron": task.cron, "timezone": task.timezone, "next_runs": task.next_runs(count)}


@router.post("/{task_id}/run", response={201: RunOut}, auth=OPERATOR, summary="Run now")
def run_now(request: HttpRequest, task_id: int) -> Status:
    """A manual run; the task's overlap policy still applies (the run may be skipped)."""
    task = _get(task_id)
    run = create_run(task, timezone.now(), TaskRun.Trigger.MANUAL)
    if run is None:  # only cron fires can collide
        raise ApiError(409, "this run was already recorded")
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
