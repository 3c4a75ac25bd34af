"""URL map: the dashboard at the root, the admin (the superuser's back office), the REST API,
the Scrapyd-compatible API and the Prometheus metrics."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from controlplane.api.errors import envelope
from controlplane.api.rest import api
from controlplane.metrics.views import metrics


@csrf_exempt  # it changes nothing; a POST would otherwise get Django's HTML CSRF failure page
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Unknown API paths answer in the API's error envelope, not with an HTML page."""
    return envelope(404, f"no API endpoint at {request.path}")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """403 with the reason, in the dashboard's layout (the API answers its own envelope)."""
    reason = str(exception) if exception and str(exception) else "You may not do that."
    return render(request, "dashboard/403.html", {"reason": reason}, status=403)


handler403 = forbidden

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
    path("scrapyd/", include("controlplane.scrapydapi.urls")),
    path("metrics", metrics, name="metrics"),
    path("", include("controlplane.dashboard.urls")),
]
