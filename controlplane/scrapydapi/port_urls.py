"""The URL map of a Scrapyd port (see :mod:`controlplane.scrapydapi.port`): the API at its root."""

from django.urls import include, path

urlpatterns = [path("", include("controlplane.scrapydapi.urls"))]
