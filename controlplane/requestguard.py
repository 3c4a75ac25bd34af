"""Requests with a NUL character in the path or a parameter are refused before any view.

PostgreSQL can neither store nor compare a string holding NUL: a lookup by such a name (a
project in a REST path, a filter in a dashboard query string) raised from inside the ORM and
answered 500, while SQLite compared it without complaint. No name, id, filter or argument of
crawlfleet has a NUL, so one anywhere in the path, the query string or a form body is refused
here with a 400, in the envelope of the face the request was for. It runs after
``controlplane.api.request_body``, which refuses API bodies it cannot read (and NUL in JSON).
Scrapyd calls read their parameters through ``controlplane.scrapydapi.params``, which refuses
NUL in Scrapyd's own envelope; only their path is checked here.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.http.multipartparser import MultiPartParserError

from controlplane.api.errors import envelope
from controlplane.api.request_body import API_PREFIX
from controlplane.scrapydapi.port import PORT_URLCONF
from controlplane.scrapydapi.responses import refusal

SCRAPYD_PREFIX = "/scrapyd/"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _nul_in(values: QueryDict) -> str | None:
    """The name of the first parameter whose name or value holds NUL."""
    for key, items in values.lists():
        if "\x00" in key or any("\x00" in item for item in items):
            return key.replace("\x00", "\\x00")
    return None


def nul_problem(request: HttpRequest) -> str | None:
    if "\x00" in request.path:
        return "the path has a NUL character (\\x00)"
    key = _nul_in(request.GET)
    if key is not None:
        return f"the query parameter {key!r} has a NUL character (\\x00)"
    if request.method == "POST" and request.content_type in FORM_TYPES:
        try:
            form = request.POST
        except (MultiPartParserError, SuspiciousOperation, OSError):
            return None  # unreadable: CSRF and the view answer it as they always did
        key = _nul_in(form)
        if key is not None:
            return f"the form field {key!r} has a NUL character (\\x00)"
    return None


class NulCharacterMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        scrapyd = getattr(request, "urlconf", None) == PORT_URLCONF or request.path.startswith(
            SCRAPYD_PREFIX
        )
        # The Scrapyd face parses its own parameters (and refuses a body it cannot parse).
        problem = nul_problem(request) if not scrapyd else self._path_only(request)
        if problem is None:
            return self.get_response(request)
        if scrapyd:
            return refusal(problem, status=400)
        if request.path.startswith(API_PREFIX):
            return envelope(400, problem)
        return HttpResponseBadRequest(problem, content_type="text/plain; charset=utf-8")

    @staticmethod
    def _path_only(request: HttpRequest) -> str | None:
        return "the path has a NUL character (\\x00)" if "\x00" in request.path else None
