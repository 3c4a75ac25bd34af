"""Monitor rules: a project's defaults and a task's own, and what a task is judged by.

The rules are :mod:`controlplane.monitors.services`'s, shared with the dashboard: a malformed
rule (an unknown kind or parameter, a percentage out of range, an unknown HTTP status) is
refused with a message per field, and nothing is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import ConfigDict

from controlplane.api.auth import OPERATOR, VIEWER
from controlplane.api.errors import not_found
from controlplane.deploys.models import Project
from controlplane.monitors import rules, services
from controlplane.monitors.models import MonitorRule, effective_rules
from controlplane.scheduling.models import Task

router = Router(tags=["monitors"])
Outcome = Literal["failed", "degraded"]


class MonitorIn(Schema):
    model_config = ConfigDict(extra="forbid")
    project: str
    task: str | None = None
    kind: str
    params: dict[str, Any] = {}
    outcome: Outcome = "degraded"
    enabled: bool = True


class MonitorPatch(Schema):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] | None = None
    outcome: Outcome | None = None
    enabled: bool | None = None


class MonitorOut(Schema):
    id: int
    project: str
    task: str | None
    scope: Literal["project", "task"]
    kind: str
    params: dict[str, Any]
    description: str
    outcome: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


class KindOut(Schema):
    kind: str
    label: str
    checked: Literal["when the job ends", "while the job runs"]


def monitor_out(rule: MonitorRule) -> dict[str, Any]:
    return {
        "id": rule.pk,
        "project": rule.project.name,
        "task": rule.task.name if rule.task_id else None,
        "scope": "project" if rule.is_default else "task",
        "kind": rule.kind,
        "params": rule.params,
        "description": rule.description,
        "outcome": rule.outcome,
        "enabled": rule.enabled,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }


def _project(name: str) -> Project:
    project = Project.objects.filter(name=name).first()
    if project is None:
        raise not_found(f"project {name!r}")
    return project


def _task(name: str) -> Task:
    task = Task.objects.select_related("project").filter(name=name).first()
    if task is None:
        raise not_found(f"task {name!r}")
    return task


def _get(rule_id: int) -> MonitorRule:
    rule = MonitorRule.objects.select_related("project", "task").filter(pk=rule_id).first()
    if rule is None:
        raise not_found(f"monitor {rule_id}")
    return rule


@router.get("/kinds", response=list[KindOut], auth=VIEWER)
def list_kinds(request: HttpRequest) -> list[dict[str, str]]:
    return [
        {
            "kind": kind,
            "label": spec.label,
            "checked": "while the job runs" if spec.check is None else "when the job ends",
        }
        for kind, spec in rules.KINDS.items()
    ]


@router.get("", response=list[MonitorOut], auth=VIEWER)
def list_monitors(
    request: HttpRequest, project: str | None = None, task: str | None = None
) -> list[dict[str, Any]]:
    """Rules as set: filter by project (its defaults and its tasks' rules) or by task."""
    rows = MonitorRule.objects.select_related("project", "task")
    if project:
        rows = rows.filter(project__name=project)
    if task:
        rows = rows.filter(task__name=task)
    return [monitor_out(r) for r in rows]


@router.get("/effective", response=list[MonitorOut], auth=VIEWER)
def effective(request: HttpRequest, task: str) -> list[dict[str, Any]]:
    """What a task's jobs are judged by: its own rules, and the defaults it does not replace."""
    found = _task(task)
    return [monitor_out(r) for r in effective_rules(found.project_id, found.pk)]


@router.post("", response={201: MonitorOut}, auth=OPERATOR)
def create_monitor(request: HttpRequest, payload: MonitorIn) -> Status:
    project = _project(payload.project)
    task = _task(payload.task) if payload.task else None
    rule = services.new_rule(project, task)
    data = payload.dict(exclude={"project", "task"})
    return Status(201, monitor_out(services.save_rule(rule, data, actor=request.actor)))


@router.get("/{rule_id}", response=MonitorOut, auth=VIEWER)
def get_monitor(request: HttpRequest, rule_id: int) -> dict[str, Any]:
    return monitor_out(_get(rule_id))


@router.patch("/{rule_id}", response=MonitorOut, auth=OPERATOR)
def update_monitor(request: HttpRequest, rule_id: int, payload: MonitorPatch) -> dict[str, Any]:
    data = payload.dict(exclude_unset=True)
    return monitor_out(services.save_rule(_get(rule_id), data, actor=request.actor))


@router.delete("/{rule_id}", response={204: None}, auth=OPERATOR)
def delete_monitor(request: HttpRequest, rule_id: int) -> Status:
    services.delete_rule(_get(rule_id), actor=request.actor)
    return Status(204, None)
