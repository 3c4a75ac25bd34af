"""URL map: the admin (also the landing page until the dashboard exists) and the REST API."""

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView

from controlplane.api.errors import envelope
from controlplane.api.rest import api


@csrf_exempt  # it changes nothing; a POST would otherwise get Django's HTML CSRF failure page
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Unknown API paths answer in the API's error envelope, not with an HTML page."""
    return envelope(404, f"no API endpoint at {request.path}")


urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
]
