"""URL map: the admin, the REST API under /api/v1/ and the Scrapyd-compatible API under /scrapyd/."""

from django.contrib import admin
from django.urls import path

from controlplane.api.rest import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
]
