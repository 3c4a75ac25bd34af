"""Monitor rules on the task and project pages: the card listing them, and adding, editing,
deleting and switching off rules.

A task's card lists what its jobs are judged by (its own rules and the project defaults it does
not replace); a project's card lists its defaults. Every change goes through
:mod:`controlplane.monitors.services` (as the REST API's does), which validates and audits with
``request.actor``; these views only turn the form into its data and refusals into messages
beside the inputs. The URLs are mapped by the task and project sections (``task_urls``,
``project_urls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from controlplane.accounts.roles import Role
from controlplane.dashboard.access import requires
from controlplane.dashboard.monitor_form import RuleForm, add_refusal, initial_for
from controlplane.deploys.models import Project
from controlplane.monitors import rules, services
from controlplane.monitors.models import MonitorRule
from controlplane.refusals import Refused
from controlplane.scheduling.models import Task


@dataclass(frozen=True)
class Scope:
    """Where rules are set: a task (its own rules) or a project (its defaults)."""

    project: Project
    task: Task | None = None

    @property
    def prefix(self) -> str:
        return "task" if self.task else "project"

    @property
    def owner_id(self) -> int:
        return self.task.pk if self.task else self.project.pk

    @property
    def name(self) -> str:
        return f"task {self.task.name}" if self.task else f"project {self.project.name}"

    @property
    def page_url(self) -> str:
        return reverse(f"dashboard:{self.prefix}", args=[self.owner_id]) + "#monitors"

    @property
    def url_new(self) -> str:
        return self.url("new")

    def url(self, action: str, *args: Any) -> str:
        return reverse(f"dashboard:{self.prefix}_monitor_{action}", args=[self.owner_id, *args])


def _task_scope(task_id: int) -> Scope:
    task = get_object_or_404(Task.objects.select_related("project"), pk=task_id)
    return Scope(task.project, task)


def _project_scope(project_id: int) -> Scope:
    return Scope(get_object_or_404(Project.objects.only("name"), pk=project_id))


def _rule(scope: Scope, rule_id: int) -> MonitorRule:
    """A rule set on this scope itself (a task's own, or a project's default)."""
    rows = MonitorRule.objects.select_related("project", "task")
    return get_object_or_404(rows, pk=rule_id, project=scope.project, task=scope.task)


# --- the card ----------------------------------------------------------------------------------
def _row(scope: Scope, rule: MonitorRule, replaces: MonitorRule | None = None) -> dict[str, Any]:
    """One line of the card, with the URLs of what an operator may do to it here."""
    row: dict[str, Any] = {
        "rule": rule,
        "replaces": replaces,
        "while_running": rules.KINDS[rule.kind].check is None
        if rule.kind in rules.KINDS
        else False,
        "inherited": scope.task is not None and rule.is_default,
    }
    if row["inherited"]:
        row["off_url"] = scope.url("off", rule.pk)
        row["override_url"] = f"{scope.url('new')}?like={rule.pk}"
        row["default_url"] = reverse("dashboard:project", args=[rule.project_id]) + "#monitors"
    else:
        row["edit_url"] = scope.url("edit", rule.pk)
        row["delete_url"] = scope.url("delete", rule.pk)
    return row


def card_context(scope: Scope) -> dict[str, Any]:
    """What ``dashboard/monitors/_card.html`` needs, for a task's or a project's page."""
    if scope.task is not None:
        listed = services.judged_by(scope.task)
        rows = [_row(scope, item.rule, item.replaces) for item in listed]
    else:
        rows = [_row(scope, rule) for rule in services.rules_of(scope.project)]
    # The add form (shown to operators only): building it runs no query.
    form = RuleForm(initial=initial_for(None))
    return {"monitor_rows": rows, "monitor_scope": scope, "monitor_form": form}


def task_card(task: Task) -> dict[str, Any]:
    return card_context(Scope(task.project, task))


def project_card(project: Project) -> dict[str, Any]:
    return card_context(Scope(project))


# --- forms -------------------------------------------------------------------------------------
def _form_page(
    request: HttpRequest,
    scope: Scope,
    form: RuleForm,
    *,
    rule: MonitorRule | None = None,
    like: MonitorRule | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {"scope": scope, "form": form, "rule": rule, "like": like}
    return render(request, "dashboard/monitors/form.html", context, status=status)


def _show_every_problem(scope: Scope, form: RuleForm, rule: MonitorRule | None) -> None:
    """Some inputs did not parse; ask the domain about the rest, so every problem shows at once."""
    copy = (
        MonitorRule.objects.get(pk=rule.pk)
        if rule
        else services.new_rule(scope.project, scope.task)
    )
    try:
        services.validate_rule(copy, form.rule_data())
    except Refused as exc:
        add_refusal(form, exc)


def _save(request: HttpRequest, scope: Scope, rule: MonitorRule | None) -> HttpResponse:
    form = RuleForm(request.POST, kind=rule.kind if rule else None)
    if not form.is_valid():
        _show_every_problem(scope, form, rule)
        return _form_page(request, scope, form, rule=rule, status=422)
    target = rule or services.new_rule(scope.project, scope.task)
    try:
        services.save_rule(target, form.rule_data(), actor=request.actor)  # type: ignore[attr-defined]
    except Refused as exc:
        add_refusal(form, exc)
        status = exc.status if exc.status == 409 else 422
        return _form_page(request, scope, form, rule=rule, status=status)
    verb = "saved" if rule else "added"
    messages.success(request, f"Monitor rule “{target.description}” {verb} on {scope.name}.")
    return redirect(scope.page_url)


def _new(request: HttpRequest, scope: Scope) -> HttpResponse:
    if request.method == "POST":
        return _save(request, scope, None)
    like = None
    if request.GET.get("like", "").isdigit():  # override a default: start from its values
        like = MonitorRule.objects.filter(
            pk=int(request.GET["like"]), project=scope.project, task__isnull=True
        ).first()
    return _form_page(request, scope, RuleForm(initial=initial_for(like)), like=like)


def _edit(request: HttpRequest, scope: Scope, rule_id: int) -> HttpResponse:
    rule = _rule(scope, rule_id)
    if request.method == "POST":
        return _save(request, scope, rule)
    return _form_page(
        request, scope, RuleForm(initial=initial_for(rule), kind=rule.kind), rule=rule
    )


def _delete(request: HttpRequest, scope: Scope, rule_id: int) -> HttpResponse:
    rule = _rule(scope, rule_id)
    services.delete_rule(rule, actor=request.actor)  # type: ignore[attr-defined]
    messages.success(request, f"Monitor rule “{rule.description}” deleted from {scope.name}.")
    return redirect(scope.page_url)


@requires(Role.OPERATOR)
def task_rule_new(request: HttpRequest, task_id: int) -> HttpResponse:
    return _new(request, _task_scope(task_id))


@requires(Role.OPERATOR)
def task_rule_edit(request: HttpRequest, task_id: int, rule_id: int) -> HttpResponse:
    return _edit(request, _task_scope(task_id), rule_id)


@requires(Role.OPERATOR, post=True)
def task_rule_delete(request: HttpRequest, task_id: int, rule_id: int) -> HttpResponse:
    return _delete(request, _task_scope(task_id), rule_id)


@requires(Role.OPERATOR, post=True)
def task_rule_off(request: HttpRequest, task_id: int, rule_id: int) -> HttpResponse:
    """Switch a project default off for this task (a disabled task rule of its kind)."""
    scope = _task_scope(task_id)
    default = get_object_or_404(
        MonitorRule.objects.select_related("project"),
        pk=rule_id,
        project=scope.project,
        task__isnull=True,
    )
    try:
        services.switch_off_default(default, scope.task, actor=request.actor)  # type: ignore[arg-type, attr-defined]
    except Refused as exc:
        messages.error(request, f"Not switched off: {exc.message}.")
    else:
        messages.success(
            request, f"The project default “{default.description}” is off for {scope.name}."
        )
    return redirect(scope.page_url)


@requires(Role.OPERATOR)
def project_rule_new(request: HttpRequest, project_id: int) -> HttpResponse:
    return _new(request, _project_scope(project_id))


@requires(Role.OPERATOR)
def project_rule_edit(request: HttpRequest, project_id: int, rule_id: int) -> HttpResponse:
    return _edit(request, _project_scope(project_id), rule_id)


@requires(Role.OPERATOR, post=True)
def project_rule_delete(request: HttpRequest, project_id: int, rule_id: int) -> HttpResponse:
    return _delete(request, _project_scope(project_id), rule_id)


task_urls = [
    path("<int:task_id>/monitors/new/", task_rule_new, name="task_monitor_new"),
    path("<int:task_id>/monitors/<int:rule_id>/", task_rule_edit, name="task_monitor_edit"),
    path(
        "<int:task_id>/monitors/<int:rule_id>/delete/",
        task_rule_delete,
        name="task_monitor_delete",
    ),
    path("<int:task_id>/monitors/<int:rule_id>/off/", task_rule_off, name="task_monitor_off"),
]
project_urls = [
    path("<int:project_id>/monitors/new/", project_rule_new, name="project_monitor_new"),
    path(
        "<int:project_id>/monitors/<int:rule_id>/", project_rule_edit, name="project_monitor_edit"
    ),
    path(
        "<int:project_id>/monitors/<int:rule_id>/delete/",
        project_rule_delete,
        name="project_monitor_delete",
    ),
]
