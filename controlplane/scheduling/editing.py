"""Creating, changing and deleting tasks: the one set of rules every face applies.

Validation is the model's (``full_clean``) plus the lookups by name (project, version, nodes), so
the REST API and the dashboard refuse the same things with the same messages, every problem at
once and keyed by field. Each change is audited with the fields it touched.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.accounts import audit
from controlplane.deploys.models import Project
from controlplane.nodes.models import Node
from controlplane.refusals import Refused, field_errors, summary
from controlplane.scheduling.models import Task

# Fields copied as they are; project, version and selector_nodes are looked up by name.
PLAIN_FIELDS = [
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
    "priority",
    "max_concurrent",
    "after_condition",
    "pass_upstream",
]
# Fields that take None (no limit).
NULLABLE_FIELDS = ("max_runtime", "max_concurrent")
# How far up a chain the loop check walks; longer chains are refused as too long.
MAX_CHAIN_DEPTH = 50


def snapshot(task: Task) -> dict[str, Any]:
    """The task's editable fields, as the audit trail records them."""
    if not task.pk:
        return {}
    body = {key: getattr(task, key) for key in PLAIN_FIELDS}
    body["project"] = task.project.name if task.project_id else None
    body["version"] = task.version.version if task.version_id else None
    body["selector_nodes"] = sorted(task.selector_nodes.values_list("name", flat=True))
    body["after_task"] = task.after_task.name if task.after_task_id else None
    return body


def _set_upstream(task: Task, wanted: str | None, errors: dict[str, list[str]]) -> None:
    """``after_task`` by name: unknown names are refused; "" or None clears it."""
    if not wanted:
        task.after_task = None
        return
    upstream = Task.objects.filter(name=wanted).first()
    if upstream is None:
        errors.setdefault("after_task", []).append(f"unknown task {wanted!r}")
    else:
        task.after_task = upstream


def chain_loop(task: Task, lock: bool = False) -> str:
    """The loop ``task.after_task`` would close, as ``A → B → A`` ("" when there is none).

    Walks up from the upstream task; ``lock`` takes the rows walked (inside a transaction), so
    two saves that would close one loop between them cannot both pass."""
    if not task.after_task_id:
        return ""
    names = [task.name]
    rows = Task.objects.select_for_update() if lock else Task.objects
    current: int | None = task.after_task_id
    for _ in range(MAX_CHAIN_DEPTH):
        if current is None:
            return ""
        if task.pk and current == task.pk:
            return " → ".join([*names, task.name])
        row = rows.filter(pk=current).values_list("name", "after_task_id").first()
        if row is None:
            return ""
        names.append(row[0])
        current = row[1]
    return f"a chain longer than {MAX_CHAIN_DEPTH} tasks: {' → '.join(names[:4])} → …"


def _loop_refusal(loop: str) -> Refused:
    message = f"would make a loop: {loop}" if "→ …" not in loop else f"would make {loop}"
    return Refused(f"after_task: {message}", fields={"after_task": [message]})


def apply(task: Task, data: dict[str, Any]) -> list[Node] | None:
    """Set ``data`` on ``task`` and validate it all; returns the selected nodes to store."""
    errors: dict[str, list[str]] = {}
    for key in PLAIN_FIELDS:
        if key in data:
            if data[key] is None and key not in NULLABLE_FIELDS:
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
    if "after_task" in data:
        _set_upstream(task, data["after_task"], errors)
    if task.after_task_id and task.pk and task.after_task_id == task.pk:
        errors.setdefault("after_task", []).append("a task cannot run after itself")
    elif "after_task" not in errors and (loop := chain_loop(task)):
        errors.setdefault("after_task", []).append(_loop_refusal(loop).fields["after_task"][0])
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
        raise Refused(summary(errors), fields=errors)
    clash = Task.objects.filter(name=task.name)
    if task.pk:
        clash = clash.exclude(pk=task.pk)
    if clash.exists():
        raise Refused(
            f"a task named {task.name!r} exists",
            code="conflict",
            status=409,
            fields={"name": ["already exists"]},
        )
    return nodes


def validate_task(task: Task, data: dict[str, Any]) -> None:
    """Raise the :class:`Refused` that :func:`save_task` would, saving nothing. ``task`` is
    changed in memory, so pass a copy: a form uses it to show every problem at once."""
    apply(task, data)


def save_task(task: Task, data: dict[str, Any], actor: audit.Actor | None = None) -> Task:
    """Apply ``data`` (field name to value; names for project, version and nodes), validate it
    all, save, and audit. Raises :class:`Refused` with per-field messages; nothing is saved then.

    Disabling alone is never refused: an operator must be able to stop a task even when the
    rest of it no longer validates (its spider left the current version, say)."""
    created = task.pk is None
    if not created and data == {"enabled": False}:
        return _disable(task, actor)
    before = snapshot(Task.objects.get(pk=task.pk)) if not created else {}
    nodes = apply(task, data)
    with transaction.atomic():
        if loop := chain_loop(task, lock=True):
            raise _loop_refusal(loop)  # another save closed the loop in the meantime
        task.save()
        if nodes is not None or created:
            task.selector_nodes.set(nodes or [])
        after = snapshot(task)
        if created:
            audit.record(actor, "task.create", task.name, fields=after)
        elif changed := audit.changes(before, after):
            audit.record(actor, "task.update", task.name, changes=changed)
    return task


def _disable(task: Task, actor: audit.Actor | None) -> Task:
    """A conditional update: of two operators disabling at once, one change is audited."""
    with transaction.atomic():
        now = timezone.now()
        if Task.objects.filter(pk=task.pk, enabled=True).update(enabled=False, updated_at=now):
            audit.record(actor, "task.update", task.name, changes={"enabled": [True, False]})
    task.enabled = False
    return task
