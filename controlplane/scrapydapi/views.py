"""One view for every Scrapyd JSON endpoint: auth, method, parameters, envelope."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from controlplane.scrapydapi.auth import Unauthorized, actor_from_basic_auth, unauthorized
from controlplane.scrapydapi.endpoints import ENDPOINTS
from controlplane.scrapydapi.params import Params
from controlplane.scrapydapi.responses import ScrapydRefusal, answer, refusal

logger = logging.getLogger(__name__)


def prefix_of(request: HttpRequest) -> str:
    """The path the API is mounted at: ``/scrapyd`` on the web port, "" on its own port."""
    return getattr(request, "scrapyd_prefix", "/scrapyd")


@csrf_exempt
def endpoint(request: HttpRequest, name: str) -> HttpResponse:
    handler, method, role = ENDPOINTS[name]
    allowed = ["HEAD", "OPTIONS", method]
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        response["Allow"] = ", ".join(allowed)
        return response
    try:
        actor = actor_from_basic_auth(request)
    except Unauthorized as exc:
        return unauthorized(str(exc))
    if request.method != method and not (request.method == "HEAD" and method == "GET"):
        # Scrapyd's own words for a wrong method, still an HTTP 200 error envelope.
        expected = ", ".join(f"b'{m}'" for m in sorted(allowed))
        return refusal(f"UnsupportedMethod: Expected one of [{expected}]")
    if not actor.allows(role):
        return refusal(f"this needs the {role} role; token {actor.name!r} has {actor.role}", 403)
    try:
        return answer(handler(Params(request), actor, prefix_of(request)))
    except ScrapydRefusal as exc:
        return refusal(exc.message, exc.status)
    except Exception:
        logger.exception("Scrapyd API call %s failed", name)
        return refusal(f"{name} failed on the control plane; see its log", 500)
