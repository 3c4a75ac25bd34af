"""The Scrapyd API's paths, the same under ``/scrapyd/`` and at the root of its own port."""

from django.urls import path

from controlplane.scrapydapi import pages, views
from controlplane.scrapydapi.endpoints import ENDPOINTS

app_name = "scrapydapi"

urlpatterns = [
    path("", pages.home_page, name="home"),
    path("jobs", pages.jobs_page, name="jobs"),
    path("logs/<str:project>/<str:spider>/<str:job>.log", pages.log_file, name="log"),
    *[path(name, views.endpoint, {"name": name}) for name in ENDPOINTS],
]
