"""Dashboard section: tasks. The list, a task's page (fields, next fires, success, run history),
creating and editing every field, enabling, running now and deleting.

Every change goes through the domain services the REST API uses (``scheduling.editing``,
``jobs.taskactions``), which validate and audit; these views only turn forms into their data and
their refusals back into messages beside the fields.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from controlplane.accounts.roles import Role
from controlplane.dashboard import paging, task_stats
from controlplane.dashboard.access import requires
from controlplane.dashboard.task_form import (
    TaskForm,
    add_refusal,
    initial_for,
    spider_options,
    timezone_names,
)
from controlplane.dashboard.views import monitors
from controlplane.deploys.models import Project
from controlplane.jobs import taskactions
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.refusals import Refused
from controlplane.scheduling import editing
from controlplane.scheduling.models import Task, TaskRun

LIST_PAGE_SIZE = paging.DEFAULT_PAGE_SIZE
ENABLED_FILTERS = {"yes": True, "no": False}


def _task(task_id: int) -> Task:
    tasks = Task.objects.select_related(
        "project", "project__current_version", "version", "after_task"
    ).defer(
        "project__current_version__egg",
        "version__egg",  # eggs are megabytes
    )
    return get_object_or_404(tasks, pk=task_id)


def _back(request: HttpRequest, task: Task | None = None) -> HttpResponseRedirect:
    """To the page the action was asked from (``next``, same site only), else the task."""
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("dashboard:task", args=[task.pk]) if task else reverse("dashboard:tasks")
    return redirect(target)


# --- reading ---------------------------------------------------------------------------------
@requires()
def task_list(request: HttpRequest) -> HttpResponse:
    """Tasks by name (keyset on the unique name), filtered by project and enabled."""
    tasks = task_stats.with_last_run(Task.objects.select_related("project", "after_task"))
    project = request.GET.get("project", "")
    enabled = request.GET.get("enabled", "")
    if project:
        tasks = tasks.filter(project__name=project)
    if enabled in ENABLED_FILTERS:
        tasks = tasks.filter(enabled=ENABLED_FILTERS[enabled])
    cursor = request.GET.get("cursor", "")
    if cursor:
        tasks = tasks.filter(name__gt=cursor)
    found = list(tasks.order_by("name")[: LIST_PAGE_SIZE + 1])
    more = len(found) > LIST_PAGE_SIZE
    found = found[:LIST_PAGE_SIZE]
    page = paging.Page(
        task_stats.task_rows(found), found[-1].name if more else None, first=not cursor
    )
    return render(
        request,
        "dashboard/tasks/list.html",
        {
            "page": page,
            "projects": Project.objects.values_list("name", flat=True),
            "project": project,
            "enabled": enabled,
            "filtered": bool(project or enabled),
            "success_days": task_stats.SUCCESS_DAYS,
        },
    )


def preview(expression: str, zone_name: str) -> dict[str, Any]:
    """The cron preview's context: the next fires, or cron's readable error."""
    context: dict[str, Any] = {"cron": expression, "zone": zone_name or "UTC"}
    if not expression.strip():
        return {**context, "empty": True}
    try:
        context["fires"] = task_stats.next_fires(expression, zone_name or "UTC")
    except ValidationError as exc:
        context["error"] = " ".join(exc.messages)
        context["error_field"] = "timezone" if "timezone" in exc.messages[0] else "cron"
    return context


@requires()
def cron_preview(request: HttpRequest) -> HttpResponse:
    """The next fires of any cron and timezone, as the form's fragment (GET: changes nothing)."""
    context = preview(request.GET.get("cron", ""), request.GET.get("timezone", "").strip())
    return render(request, "dashboard/tasks/_cron_preview.html", {"preview": context})


@requires()
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task(task_id)
    history = task_stats.run_history(task, request.GET.get("cursor"))
    live = history.first and any(row.run.state == TaskRun.State.ACTIVE for row in history.rows)
    context = {"task": task, "history": history, "live": live}
    if request.headers.get("HX-Request") and request.GET.get("part") == "runs":
        return render(request, "dashboard/tasks/_runs.html", context)
    version = task.version or task.project.current_version
    if version is None:  # runs fall back to the newest version
        version = task.project.versions.filter(deleted_at__isnull=True).defer("egg").first()
    context.update(
        preview=preview(task.cron, task.timezone),
        rate=task_stats.success_rates([task.pk]).get(task.pk, task_stats.Rate()),
        success_days=task_stats.SUCCESS_DAYS,
        chart_json=task_stats.chart_json(task),
        nodes=sorted(task.selector_nodes.values_list("name", flat=True)),
        downstream=list(task.downstream.order_by("name").only("pk", "name", "after_condition")),
        run_version=version,
        active_jobs=Job.objects.filter(run__task=task, state__in=Job.ACTIVE).count(),
        **monitors.task_card(task),
    )
    return render(request, "dashboard/tasks/detail.html", context)


# --- creating and editing --------------------------------------------------------------------
def _form_page(request: HttpRequest, task: Task, form: TaskForm, status: int = 200) -> HttpResponse:
    data = form.data if form.is_bound else form.initial
    shown = preview(str(data.get("cron", "")), str(data.get("timezone", "")).strip())
    if "error" in shown and shown["error_field"] in form.errors:
        shown = {"empty": True, "waiting": True}  # the message is beside the field already
    context = {
        "task": task,
        "form": form,
        "preview": shown,
        "timezones": timezone_names(),
        "spiders": spider_options(),
        "node_tags": sorted(
            {t for tags in Node.objects.values_list("tags", flat=True) for t in tags}
        ),
    }
    return render(request, "dashboard/tasks/form.html", context, status=status)


def _show_every_problem(task: Task, form: TaskForm) -> None:
    """The form refused some fields; ask the domain about the ones that parsed, so the operator
    sees every problem at once rather than one round trip each."""
    copy = Task.objects.get(pk=task.pk) if task.pk else Task()
    try:
        editing.validate_task(copy, form.task_data())
    except Refused as exc:
        add_refusal(form, exc)


def _edit(request: HttpRequest, task: Task) -> HttpResponse:
    if request.method != "POST":
        return _form_page(request, task, TaskForm(initial=initial_for(task)))
    form = TaskForm(request.POST)
    if not form.is_valid():
        _show_every_problem(task, form)
        return _form_page(request, task, form, status=422)
    created = task.pk is None
    try:
        editing.save_task(task, form.task_data(), actor=request.actor)
    except Refused as exc:
        add_refusal(form, exc)
        return _form_page(request, task, form, status=exc.status if exc.status == 409 else 422)
    messages.success(request, f"Task {task.name} {'created' if created else 'saved'}.")
    return redirect("dashboard:task", task_id=task.pk)


@requires(Role.OPERATOR)
def task_create(request: HttpRequest) -> HttpResponse:
    return _edit(request, Task())


@requires(Role.OPERATOR)
def task_edit(request: HttpRequest, task_id: int) -> HttpResponse:
    return _edit(request, _task(task_id))


# --- actions ---------------------------------------------------------------------------------
@requires(Role.OPERATOR, post=True)
def task_set_enabled(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task(task_id)
    enabled = request.POST.get("enabled") == "1"
    try:
        editing.save_task(task, {"enabled": enabled}, actor=request.actor)
    except Refused as exc:
        messages.error(request, f"Task {task.name} cannot be enabled: {exc.message}")
    else:
        messages.success(request, f"Task {task.name} {'enabled' if enabled else 'disabled'}.")
    return _back(request, task)


def run_message(task: Task, run: TaskRun) -> tuple[int, str]:
    """What became of a manual run, for the flash message."""
    if run.state == TaskRun.State.SKIPPED:
        return (
            messages.WARNING,
            f"Run #{run.pk} of {task.name} was recorded as skipped: {run.reason}.",
        )
    if run.state == TaskRun.State.FAILED:
        return messages.ERROR, f"Run #{run.pk} of {task.name} failed at once: {run.reason}."
    jobs = run.jobs.count()
    return (
        messages.SUCCESS,
        f"Run #{run.pk} of {task.name} started: {jobs} job{'s' if jobs != 1 else ''} queued.",
    )


@requires(Role.OPERATOR, post=True)
def task_run_now(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task(task_id)
    try:
        run = taskactions.run_now(task, actor=request.actor)
    except Refused as exc:
        messages.error(request, f"Task {task.name} was not run: {exc.message}")
    else:
        messages.add_message(request, *run_message(task, run))
    return _back(request, task)


@requires(Role.OPERATOR)
def task_delete(request: HttpRequest, task_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes (refused while a job of the task is active)."""
    task = _task(task_id)
    if request.method == "POST":
        try:
            taskactions.delete_task(task, actor=request.actor)
        except Refused as exc:
            messages.error(request, f"Task {task.name} was not deleted: {exc.message}")
            return redirect("dashboard:task", task_id=task.pk)
        messages.success(request, f"Task {task.name} deleted, with its run history.")
        return redirect("dashboard:tasks")
    context = {
        "task": task,
        "runs": task.runs.count(),
        "active_jobs": Job.objects.filter(run__task=task, state__in=Job.ACTIVE).count(),
    }
    return render(request, "dashboard/tasks/delete.html", context)


urlpatterns = [
    path("", task_list, name="tasks"),
    path("new/", task_create, name="task_create"),
    path("cron-preview/", cron_preview, name="task_cron_preview"),
    path("<int:task_id>/", task_detail, name="task"),
    path("<int:task_id>/edit/", task_edit, name="task_edit"),
    path("<int:task_id>/enabled/", task_set_enabled, name="task_enabled"),
    path("<int:task_id>/run/", task_run_now, name="task_run"),
    path("<int:task_id>/delete/", task_delete, name="task_delete"),
    *monitors.task_urls,
]
