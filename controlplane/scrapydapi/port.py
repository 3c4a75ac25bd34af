"""The Scrapyd API at the root of a port of its own, for tools that take only ``host:port``.

ScrapydWeb parses a server as ``[user:pass@]host:port`` and the port with ``int()``, so it cannot
use ``/scrapyd/``. ``crawlfleet web --scrapyd-bind ADDR`` makes gunicorn listen there too; this
middleware sends requests that arrived on such a listener to the Scrapyd URL map. The listener is
read from the connection's own socket (not the Host header, which the client chooses).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

PORT_URLCONF = "controlplane.scrapydapi.port_urls"


def local_port(request: HttpRequest) -> int | None:
    sock = request.META.get("gunicorn.socket")
    if sock is None:
        return None
    try:
        return int(sock.getsockname()[1])
    except (OSError, IndexError, TypeError, ValueError):
        return None


class ScrapydPortMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.ports = set(settings.CRAWLFLEET_SCRAPYD_PORTS)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.ports and local_port(request) in self.ports:
            request.urlconf = PORT_URLCONF
            request.scrapyd_prefix = ""  # type: ignore[attr-defined]
        return self.get_response(request)
