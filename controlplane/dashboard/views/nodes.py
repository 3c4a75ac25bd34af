"""Dashboard section: nodes. The fleet (live), a node's page (status, health history, versions,
recent jobs), and for admins adding, editing, enabling, draining and deleting nodes.

Every change goes through :mod:`controlplane.nodes.services`, which the REST API uses too: it
validates, checks that the node answers, and audits. These views turn forms into its data and its
refusals back into messages beside the fields. Credentials are never loaded for a page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from controlplane.accounts.roles import Role
from controlplane.dashboard import node_stats, paging
from controlplane.dashboard.access import requires
from controlplane.dashboard.node_form import NodeForm
from controlplane.dashboard.views import tagcaps
from controlplane.jobs import fleetstats
from controlplane.nodes import services
from controlplane.nodes.models import Node
from controlplane.refusals import Refused

PAGE_SIZE = 100
STATE_FILTERS = ["up", "degraded", "down", "unknown", "disabled", "draining"]
# The toggles of a node's page: action -> the change it asks the service for.
TOGGLES: dict[str, dict[str, bool]] = {
    "enable": {"enabled": True},
    "disable": {"enabled": False},
    "drain": {"draining": True},
    "undrain": {"draining": False},
}
DONE = {
    "enable": "enabled: it gets new jobs again",
    "disable": "disabled: it gets no new jobs",
    "drain": "draining: it gets no new jobs; the ones on it run to their end",
    "undrain": "no longer draining: it gets new jobs again",
}


def _filtered(request: HttpRequest) -> QuerySet[Node]:
    nodes = node_stats.nodes_for_pages()
    state = request.GET.get("state", "")
    if state == "disabled":
        nodes = nodes.filter(enabled=False)
    elif state == "draining":
        nodes = nodes.filter(enabled=True, draining=True)
    elif state in STATE_FILTERS:
        nodes = nodes.filter(state=state)
    tag = request.GET.get("tag", "").strip()
    if tag:
        # Tags are names (no quotes), so the quoted tag matches one whole list element.
        nodes = nodes.filter(tags__icontains=f'"{tag}"')
    query = request.GET.get("q", "").strip()
    if query:
        nodes = nodes.filter(Q(name__icontains=query) | Q(url__icontains=query))
    return nodes


def _back(request: HttpRequest, node: Node | None) -> HttpResponse:
    if node is None or request.POST.get("next") == "list":
        return redirect("dashboard:nodes")
    return redirect("dashboard:node", node_id=node.pk)


def _notes(outcome: services.NodeOutcome) -> str:
    return f" Versions: {'; '.join(outcome.notes)}." if outcome.notes else ""


# --- reading ---------------------------------------------------------------------------------
@requires()
def node_list(request: HttpRequest) -> HttpResponse:
    """The fleet, by name (keyset on the unique name); the table refreshes itself (htmx)."""
    nodes = _filtered(request)
    cursor = request.GET.get("cursor", "")
    if cursor:
        nodes = nodes.filter(name__gt=cursor)
    found = list(nodes[: PAGE_SIZE + 1])
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    context: dict[str, Any] = {
        "rows": node_stats.fleet_rows(found),
        "summary": fleetstats.fleet_summary(),
        "page": paging.Page(found, found[-1].name if more else None, first=not cursor),
        "states": STATE_FILTERS,
        "filters": {key: request.GET.get(key, "") for key in ("state", "tag", "q")},
    }
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/nodes/_fleet.html", context)
    return render(request, "dashboard/nodes/list.html", context)


@requires()
def node_detail(request: HttpRequest, node_id: int) -> HttpResponse:
    """Status and recent jobs (refreshed every few seconds), health history, versions held."""
    node = get_object_or_404(node_stats.nodes_for_pages(), pk=node_id)
    [row] = node_stats.fleet_rows([node])
    context: dict[str, Any] = {
        "node": node,
        "row": row,
        "jobs": node_stats.recent_jobs(node),
        "poller": node_stats.poller_of(node),
        "jobs_url": f"{reverse('dashboard:jobs')}?node={node.name}",
    }
    part = request.GET.get("part", "") if request.headers.get("HX-Request") else ""
    if part == "live":
        return render(request, "dashboard/nodes/_live.html", context)
    context["history"] = node_stats.health_history(node, request.GET.get("span", ""))
    context["spans"] = list(node_stats.SPANS)
    if part == "health":
        return render(request, "dashboard/nodes/_health.html", context)
    context["deployments"] = node_stats.deployments(node)
    return render(request, "dashboard/nodes/detail.html", context)


# --- changing (admins) -------------------------------------------------------------------------
@requires(Role.ADMIN)
def node_add(request: HttpRequest) -> HttpResponse:
    form = NodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            outcome = services.add_node(form.data_for_service(), actor=request.actor)
        except Refused as exc:
            form.add_refusal(exc)
        else:
            node = outcome.node
            messages.success(
                request, f"Node {node.name} added: it answered as {node.state}.{_notes(outcome)}"
            )
            return redirect("dashboard:node", node_id=node.pk)
    status = 422 if request.method == "POST" else 200
    return render(request, "dashboard/nodes/form.html", {"form": form}, status=status)


@requires(Role.ADMIN)
def node_edit(request: HttpRequest, node_id: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=node_id)
    form = NodeForm(request.POST or None, node=node)
    if request.method == "POST" and form.is_valid():
        try:
            outcome = services.update_node(node, form.data_for_service(), actor=request.actor)
        except Refused as exc:
            form.add_refusal(exc)
        else:
            messages.success(request, f"Node {node.name} saved.{_notes(outcome)}")
            return redirect("dashboard:node", node_id=node.pk)
    status = 422 if request.method == "POST" else 200
    context = {"form": form, "node": node}
    return render(request, "dashboard/nodes/form.html", context, status=status)


@requires(Role.ADMIN, post=True)
def node_toggle(request: HttpRequest, node_id: int, action: str) -> HttpResponse:
    node = get_object_or_404(Node, pk=node_id)
    change = TOGGLES.get(action)
    if change is None:
        return HttpResponse(f"unknown action {action!r}", status=400)
    try:
        outcome = services.update_node(node, change, actor=request.actor)
    except Refused as exc:
        messages.error(request, f"{node.name}: {exc.message}")
    else:
        messages.success(request, f"{node.name} is {DONE[action]}.{_notes(outcome)}")
    return _back(request, node)


@requires(Role.ADMIN, post=True)
def node_delete(request: HttpRequest, node_id: int) -> HttpResponse:
    node = get_object_or_404(Node, pk=node_id)
    force = request.POST.get("force") == "on"
    try:
        services.delete_node(node, force=force, actor=request.actor)
    except Refused as exc:
        messages.error(request, f"{node.name} was not deleted: {exc.message}")
        return _back(request, node)
    messages.success(request, f"Node {node.name} deleted.")
    return redirect("dashboard:nodes")


urlpatterns = [
    path("", node_list, name="nodes"),
    *tagcaps.urlpatterns,
    path("new/", node_add, name="node_add"),
    path("<int:node_id>/", node_detail, name="node"),
    path("<int:node_id>/edit/", node_edit, name="node_edit"),
    path("<int:node_id>/delete/", node_delete, name="node_delete"),
    path("<int:node_id>/<slug:action>/", node_toggle, name="node_toggle"),
]
