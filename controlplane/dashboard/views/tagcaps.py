"""Dashboard page: caps on jobs in flight per node tag, next to the nodes.

A tag cap limits how many jobs run at once, together, on the nodes carrying a tag (say, the
nodes behind one proxy pool). Changes go through :mod:`controlplane.nodes.tagcaps`, which the
REST API uses too; admins change them, everyone reads them.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path

from controlplane.accounts.roles import Role
from controlplane.dashboard.access import requires
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node, TagCap
from controlplane.nodes.tagcaps import delete_tag_cap, set_tag_cap
from controlplane.refusals import Refused


class TagCapForm(forms.Form):
    tag = forms.CharField(max_length=64, help_text="a node tag, e.g. eu")
    max_concurrent = forms.IntegerField(
        label="At most", help_text="jobs at once on all nodes with this tag together"
    )


def _rows() -> list[dict]:
    """Each cap with the jobs in flight on its nodes now: three queries whatever the count."""
    tags = {pk: set(found or ()) for pk, found in Node.objects.values_list("pk", "tags")}
    in_flight = (
        Job.objects.filter(state__in=Job.ON_NODE, node__isnull=False)
        .values_list("node")
        .annotate(n=Count("pk"))
        .order_by()
    )
    rows = []
    for cap in TagCap.objects.all():
        busy = sum(n for node, n in in_flight if cap.tag in tags.get(node, ()))
        nodes = sum(1 for found in tags.values() if cap.tag in found)
        rows.append({"cap": cap, "busy": busy, "nodes": nodes})
    return rows


def _page(request: HttpRequest, form: TagCapForm, status: int = 200) -> HttpResponse:
    return render(
        request, "dashboard/nodes/tagcaps.html", {"rows": _rows(), "form": form}, status=status
    )


@requires()
def tag_caps(request: HttpRequest) -> HttpResponse:
    return _page(request, TagCapForm())


@requires(Role.ADMIN, post=True)
def tag_cap_set(request: HttpRequest) -> HttpResponse:
    form = TagCapForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=422)
    tag, cap = form.cleaned_data["tag"], form.cleaned_data["max_concurrent"]
    try:
        set_tag_cap(tag, cap, actor=request.actor)
    except Refused as exc:
        for name, problems in exc.fields.items():
            for problem in problems:
                form.add_error(name if name in form.fields else None, problem)
        return _page(request, form, status=exc.status)
    messages.success(request, f"At most {cap} job(s) at once on the nodes tagged {tag}.")
    return redirect("dashboard:tag_caps")


@requires(Role.ADMIN, post=True)
def tag_cap_delete(request: HttpRequest, tag: str) -> HttpResponse:
    if delete_tag_cap(tag, actor=request.actor):
        messages.success(request, f"The nodes tagged {tag} have no cap any more.")
    else:
        messages.warning(request, f"No cap was set for the tag {tag}.")
    return redirect("dashboard:tag_caps")


urlpatterns = [
    path("tag-caps/", tag_caps, name="tag_caps"),
    path("tag-caps/set/", tag_cap_set, name="tag_cap_set"),
    path("tag-caps/<str:tag>/delete/", tag_cap_delete, name="tag_cap_delete"),
]
