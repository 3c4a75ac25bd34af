"""Dashboard section: the audit trail (admin), filtered and paged by the same query as the API."""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from controlplane.accounts import auditlog
from controlplane.accounts.roles import Role
from controlplane.dashboard.access import requires
from controlplane.refusals import Refused

TIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Who")
    action = forms.CharField(
        required=False,
        max_length=40,
        label="Action",
        widget=forms.TextInput(attrs={"placeholder": "task or task.update"}),
    )
    target = forms.CharField(required=False, max_length=200, label="Target")
    since = forms.DateTimeField(required=False, label="From (UTC)", widget=TIME_WIDGET)
    until = forms.DateTimeField(required=False, label="Until (UTC)", widget=TIME_WIDGET)

    def query(self) -> auditlog.AuditFilter:
        data = self.cleaned_data
        return auditlog.AuditFilter(
            actor=data["actor"],
            action=data["action"],
            target=data["target"],
            since=data["since"],
            until=data["until"],
        )


@requires(Role.ADMIN)
def index(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    page, status = None, 200
    if form.is_valid():
        try:
            page = auditlog.search(form.query(), request.GET.get("cursor"))
        except Refused as exc:
            for field, messages in exc.fields.items():
                for message in messages:
                    form.add_error(field if field in form.fields else None, message)
            status = 400
    else:
        status = 400
    filtered = any(request.GET.get(name) for name in form.fields)
    context = {"form": form, "page": page, "filtered": filtered}
    return render(request, "dashboard/audit/index.html", context, status=status)


urlpatterns = [path("", index, name="audit")]
