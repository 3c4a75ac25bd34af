"""Dashboard section: accounts."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from controlplane.dashboard.access import requires


@requires()
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview.html", {})


urlpatterns = [path("", index, name="users")]
