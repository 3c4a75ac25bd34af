"""Dashboard section: accounts."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from controlplane.accounts.roles import Role
from controlplane.dashboard.access import requires


@requires(Role.ADMIN)
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview.html", {})


urlpatterns = [path("", index, name="users")]
