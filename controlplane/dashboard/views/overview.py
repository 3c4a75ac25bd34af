"""Dashboard section: the overview (fleet health, jobs now, the last 24 h, next fires, charts)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from controlplane.dashboard.access import requires


@requires()
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview.html", {})


urlpatterns = [path("", overview, name="overview")]
