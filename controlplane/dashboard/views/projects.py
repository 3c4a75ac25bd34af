"""Dashboard section: projects. The projects with how consistently the fleet holds their current
version; a project's page with its versions and the node-by-version matrix; for operators,
uploading an egg, deploying a version to the nodes that miss it, rollback and deletion.

Every change goes through :mod:`controlplane.deploys.services` (as the REST API does), which
validates and audits with ``request.actor``. What each node said is shown in a result panel on
the page the action returns to.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path

from controlplane.accounts.roles import Role
from controlplane.dashboard import paging, project_stats
from controlplane.dashboard.access import requires
from controlplane.dashboard.project_form import UploadForm
from controlplane.dashboard.views import monitors
from controlplane.dashboard.views.projectqueue import QueueForm, project_queue
from controlplane.dashboard.views.projectqueue import initial_for as queue_initial
from controlplane.deploys import removal, services
from controlplane.deploys.models import Project, Version
from controlplane.deploys.nodecalls import NodeResult

PAGE_SIZE = 100
RESULT_KEY = "dashboard.projects.result"


def _remember(
    request: HttpRequest, project: Project | None, title: str, results: list[NodeResult]
) -> None:
    """Keep what each node said for the next page of this project (post/redirect/get)."""
    request.session[RESULT_KEY] = {
        "project": project.pk if project else None,
        "title": title,
        "results": [r.as_dict() for r in results],
    }


def _recall(request: HttpRequest, project: Project | None) -> dict[str, Any] | None:
    result = request.session.get(RESULT_KEY)
    if result and result.get("project") == (project.pk if project else None):
        del request.session[RESULT_KEY]
        return result
    return None


def _report(request: HttpRequest, outcome_ok: bool, text: str) -> None:
    (messages.success if outcome_ok else messages.warning)(request, text)


def _list_context(request: HttpRequest) -> dict[str, Any]:
    projects = project_stats.projects_for_pages()
    cursor = request.GET.get("cursor", "")
    if cursor:
        projects = projects.filter(name__gt=cursor)
    found = list(projects[: PAGE_SIZE + 1])
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return {
        "rows": project_stats.project_rows(found),
        "page": paging.Page(found, found[-1].name if more else None, first=not cursor),
    }


def _detail_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    return {
        "project": project,
        "view": project_stats.project_page(project),
        "result": _recall(request, project),
        **monitors.project_card(project),
        "queue_form": QueueForm(initial=queue_initial(project)),
    }


# --- reading ---------------------------------------------------------------------------------
@requires()
def project_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    context["form"] = UploadForm()
    context["result"] = _recall(request, None)
    return render(request, "dashboard/projects/list.html", context)


@requires()
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(project_stats.projects_for_pages(), pk=project_id)
    context = _detail_context(request, project)
    context["form"] = UploadForm(project_name=project.name)
    return render(request, "dashboard/projects/detail.html", context)


# --- changing (operators) ----------------------------------------------------------------------
def _upload(request: HttpRequest, project: Project | None) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES, project_name=project.name if project else None)
    if form.is_valid():
        try:
            egg = form.cleaned_data["egg"]
            version = form.cleaned_data["version"] or services.version_of_egg(egg)
            outcome = services.upload_version(
                form.target_project, version, egg, actor=request.actor
            )
        except services.DeployError as exc:
            form.add_refusal(exc)
            if exc.results:
                _remember(request, project, f"Upload of version {version} refused", exc.results)
        else:
            stored = outcome.version.project
            _remember(request, stored, f"Upload of {outcome.version}", outcome.results)
            _report(request, outcome.ok, f"{outcome.version}: {outcome.message}.")
            return redirect("dashboard:project", project_id=stored.pk)
    if project is None:
        context = {**_list_context(request), "form": form, "result": _recall(request, None)}
        return render(request, "dashboard/projects/list.html", context, status=422)
    context = {**_detail_context(request, project), "form": form}
    return render(request, "dashboard/projects/detail.html", context, status=422)


@requires(Role.OPERATOR, post=True)
def project_create(request: HttpRequest) -> HttpResponse:
    """The first version of a project (or of one typed by name)."""
    return _upload(request, None)


@requires(Role.OPERATOR, post=True)
def version_upload(request: HttpRequest, project_id: int) -> HttpResponse:
    return _upload(request, get_object_or_404(project_stats.projects_for_pages(), pk=project_id))


def _version(project_id: int, version: str) -> tuple[Project, Version]:
    project = get_object_or_404(Project.objects.select_related("current_version"), pk=project_id)
    row = get_object_or_404(project.versions.filter(deleted_at__isnull=True), version=version)
    row.project = project
    return project, row


@requires(Role.OPERATOR, post=True)
def version_deploy(request: HttpRequest, project_id: int, version: str) -> HttpResponse:
    """Push a version to every node taking deploys that does not hold it yet."""
    project, row = _version(project_id, version)
    try:
        results = services.deploy_version(row, only_missing=True, actor=request.actor)
    except services.DeployError as exc:
        messages.error(request, f"{row}: {exc.message}")
        return redirect("dashboard:project", project_id=project.pk)
    pushed = [r for r in results if r.action == "deploy"]
    failed = [r for r in results if not r.ok]
    if not results:
        text = f"{row}: no node is up to deploy to."
    elif not pushed and not failed:
        text = f"{row}: every node already holds it."
    else:
        done = sum(1 for r in pushed if r.ok)
        text = f"{row}: deployed to {done} node(s) that missed it; {len(failed)} failed."
    _remember(request, project, f"Deploy of {row} to nodes missing it", results)
    _report(request, not failed, text)
    return redirect("dashboard:project", project_id=project.pk)


@requires(Role.OPERATOR, post=True)
def version_make_current(request: HttpRequest, project_id: int, version: str) -> HttpResponse:
    """Rollback (or roll forward): new runs use this version; nodes missing it get it first."""
    project, row = _version(project_id, version)
    try:
        outcome = services.rollback(project, row, actor=request.actor)
    except services.DeployError as exc:
        _remember(request, project, f"Making {row} current failed", exc.results)
        messages.error(request, exc.message)
    else:
        _remember(request, project, f"Making {row} current", outcome.results)
        _report(request, outcome.ok, f"{outcome.message}.")
    return redirect("dashboard:project", project_id=project.pk)


@requires(Role.OPERATOR, post=True)
def version_delete(request: HttpRequest, project_id: int, version: str) -> HttpResponse:
    project, row = _version(project_id, version)
    try:
        outcome = removal.delete_version(row, actor=request.actor)
    except services.DeployError as exc:
        messages.error(request, f"{row} was not deleted: {exc.message}")
    else:
        _remember(request, project, f"Deletion of {row}", outcome.results)
        _report(request, outcome.ok, f"{row}: {outcome.message}.")
    return redirect("dashboard:project", project_id=project.pk)


urlpatterns = [
    path("", project_list, name="projects"),
    path("new/", project_create, name="project_create"),
    path("<int:project_id>/", project_detail, name="project"),
    path("<int:project_id>/upload/", version_upload, name="project_upload"),
    path("<int:project_id>/queue/", project_queue, name="project_queue"),
    path(
        "<int:project_id>/versions/<str:version>/deploy/",
        version_deploy,
        name="version_deploy",
    ),
    path(
        "<int:project_id>/versions/<str:version>/current/",
        version_make_current,
        name="version_current",
    ),
    path(
        "<int:project_id>/versions/<str:version>/delete/",
        version_delete,
        name="version_delete",
    ),
    *monitors.project_urls,
]
