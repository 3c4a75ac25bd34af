"""Creating, changing and deleting monitor rules: the one set of checks every face applies.

Everything is validated before anything is written: the kind, every parameter (a negative
percentage, an unknown parameter, an unknown HTTP status are refused by name), the outcome, and
that the task belongs to the project. Each change is audited with the fields it touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from controlplane.accounts import audit
from controlplane.deploys.models import Project
from controlplane.monitors import rules
from controlplane.monitors.models import MonitorRule
from controlplane.refusals import Refused, summary
from controlplane.scheduling.models import Task

EDITABLE = ("kind", "params", "outcome", "enabled")


def snapshot(rule: MonitorRule) -> dict[str, Any]:
    return {
        "project": rule.project.name if rule.project_id else None,
        "task": rule.task.name if rule.task_id else None,
        "kind": rule.kind,
        "params": rule.params,
        "outcome": rule.outcome,
        "enabled": rule.enabled,
    }


def _apply(rule: MonitorRule, data: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(data) - set(EDITABLE))
    if unknown:
        errors["__all__"] = [f"unknown field(s): {', '.join(unknown)}; use {', '.join(EDITABLE)}"]
    if rule.pk and "kind" in data and data["kind"] != rule.kind:
        errors["kind"] = ["a rule's kind cannot change; delete it and add another"]
    kind = data.get("kind", rule.kind)
    params = data.get("params", rule.params if rule.pk else {})
    try:
        normal = rules.parse(kind, params)
    except rules.RuleError as exc:
        name = exc.field if exc.field in ("kind", "params") else f"params.{exc.field}"
        errors.setdefault(name, []).append(str(exc))
    else:
        rule.kind, rule.params, rule.target = kind, normal, rules.target_of(kind, normal)
    if "outcome" in data:
        if data["outcome"] not in MonitorRule.Outcome.values:
            errors["outcome"] = [f"one of {', '.join(MonitorRule.Outcome.values)}"]
        else:
            rule.outcome = data["outcome"]
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            errors["enabled"] = ["true or false"]
        else:
            rule.enabled = data["enabled"]
    if rule.task_id and rule.task.project_id != rule.project_id:
        errors["task"] = [f"task {rule.task} belongs to another project"]
    if errors:
        raise Refused(summary(errors), fields=errors)


def validate_rule(rule: MonitorRule, data: dict[str, Any]) -> None:
    """Raise what :func:`save_rule` would, saving nothing (``rule`` changes in memory)."""
    _apply(rule, data)


def save_rule(
    rule: MonitorRule, data: dict[str, Any], actor: audit.Actor | None = None
) -> MonitorRule:
    """Validate ``data`` onto ``rule`` (new: project, and task if any, already set), save, audit.

    Raises :class:`Refused` (422 with per-field messages; 409 when the task or project already
    has a rule of that kind and target); nothing is saved then.
    """
    created = rule.pk is None
    before = snapshot(MonitorRule.objects.get(pk=rule.pk)) if not created else {}
    _apply(rule, data)
    try:
        with transaction.atomic():
            rule.save()
            audit.record(
                actor,
                "monitor.create" if created else "monitor.update",
                rule,
                **(
                    snapshot(rule)
                    if created
                    else {"changes": audit.changes(before, snapshot(rule))}
                ),
            )
    except IntegrityError:
        where = f"task {rule.task}" if rule.task_id else f"project {rule.project}"
        what = f"{rule.kind} ({rule.target})" if rule.target else rule.kind
        raise Refused(
            f"{where} already has a {what} rule; change that one",
            code="conflict",
            status=409,
            fields={"kind": ["already set here"]},
        ) from None
    return rule


def delete_rule(rule: MonitorRule, actor: audit.Actor | None = None) -> None:
    with transaction.atomic():
        audit.record(actor, "monitor.delete", rule, **snapshot(rule))
        rule.delete()


def new_rule(project: Project, task: Task | None = None) -> MonitorRule:
    """An unsaved rule scoped to a task, or to a project as its default."""
    return MonitorRule(project=project, task=task)


def rules_of(project: Project, task: Task | None = None) -> list[MonitorRule]:
    """The rules set on this scope itself (a task's own, or a project's defaults)."""
    rows = MonitorRule.objects.filter(project=project).select_related("project", "task")
    rows = rows.filter(task=task) if task is not None else rows.filter(task__isnull=True)
    return list(rows)


@dataclass(frozen=True)
class Listed:
    """One rule a task's page lists, with the project default it replaces (if any)."""

    rule: MonitorRule
    replaces: MonitorRule | None = None


def judged_by(task: Task) -> list[Listed]:
    """The task's own rules (switched-off ones too), then the project defaults none of them
    replaces: what a page shows as the rules the task is judged by. The enabled ones among them
    are :func:`~controlplane.monitors.models.effective_rules`."""
    own = rules_of(task.project, task)
    defaults = {rule.key: rule for rule in rules_of(task.project)}
    taken = {rule.key for rule in own}
    return [Listed(rule, defaults.get(rule.key)) for rule in own] + [
        Listed(rule) for key, rule in defaults.items() if key not in taken
    ]


def switch_off_default(
    default: MonitorRule, task: Task, actor: audit.Actor | None = None
) -> MonitorRule:
    """Stop a project default applying to one task: a disabled task rule of its kind and target
    (with its parameters, so enabling it later is a choice made knowingly). Audited as a create."""
    if not default.is_default:
        raise Refused(
            f"rule {default.pk} is a task's own rule, not a project default",
            fields={"rule": ["not a project default"]},
        )
    data = {"kind": default.kind, "params": default.params, "outcome": default.outcome}
    return save_rule(new_rule(default.project, task), {**data, "enabled": False}, actor=actor)
