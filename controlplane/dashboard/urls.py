"""The dashboard's URL map: one module of views per section, each with its own ``urlpatterns``."""

from django.urls import include, path

from controlplane.dashboard.views import (
    accounts,
    alerts,
    audit,
    nodes,
    overview,
    projects,
    runs,
    session,
    tasks,
)

app_name = "dashboard"

urlpatterns = [
    path("", include(overview)),
    path("", include(session)),
    path("nodes/", include(nodes)),
    path("projects/", include(projects)),
    path("tasks/", include(tasks)),
    path("", include(runs)),  # runs/ and jobs/
    path("alerts/", include(alerts)),
    path("audit/", include(audit)),
    path("accounts/", include(accounts)),  # users and tokens
]
