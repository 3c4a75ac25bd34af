"""A project's place in the queue on its dashboard page: share weight and caps (operators).

The rules are :func:`controlplane.deploys.queuesettings.save_queue_settings`, shared with the
REST API; a refusal is shown beside its field (422) and nothing is saved.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from controlplane.accounts.roles import Role
from controlplane.dashboard.access import requires
from controlplane.deploys.models import Project
from controlplane.deploys.queuesettings import save_queue_settings
from controlplane.refusals import Refused


class QueueForm(forms.Form):
    share_weight = forms.FloatField(
        label="Share weight", help_text="0.01 to 1000; a full fleet's slots go in proportion"
    )
    max_concurrent = forms.IntegerField(
        required=False, label="At most running at once", help_text="empty = no limit"
    )
    spider_caps = forms.CharField(
        required=False,
        label="Caps per spider",
        help_text="<code>spider=N</code>, one a line: at most N of its jobs at once",
        widget=forms.Textarea(attrs={"rows": 2, "class": "mono", "spellcheck": "false"}),
    )

    def clean_spider_caps(self) -> dict[str, Any]:
        caps: dict[str, Any] = {}
        for line in self.cleaned_data.get("spider_caps", "").splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            try:
                caps[name.strip()] = int(value.strip()) if sep else None
            except ValueError:
                caps[name.strip()] = value.strip()  # the domain says what is wrong with it
        return caps


def initial_for(project: Project) -> dict[str, Any]:
    caps = "\n".join(f"{name}={cap}" for name, cap in (project.spider_caps or {}).items())
    return {
        "share_weight": f"{project.share_weight:g}",
        "max_concurrent": project.max_concurrent,
        "spider_caps": caps,
    }


@requires(Role.OPERATOR, post=True)
def project_queue(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=project_id)
    form = QueueForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            save_queue_settings(project, form.cleaned_data, actor=request.actor)
        except Refused as exc:
            status = 422
            for key, problems in exc.fields.items():
                for problem in problems:
                    form.add_error(key if key in form.fields else None, problem)
        else:
            messages.success(request, f"Queue settings of {project.name} saved.")
            return redirect("dashboard:project", project_id=project.pk)
    context = {"project": project, "queue_form": form}
    return render(request, "dashboard/projects/queue.html", context, status=status)
