"""One error envelope for every failure of the REST API.

Every error answers ``{"error": {"code", "message", "fields"}}`` (plus ``nodes`` when a deploy
failed on nodes) with the HTTP status that says what kind of failure it was, so clients need a
single code path: 400 malformed request, 401 no or bad credentials, 403 role too low, 404 unknown
object, 409 conflict with the current state, 411/413/415 a body sent without a length, too large
or of a type the API does not read (see ``controlplane.api.request_body``), 422 invalid values,
503 nodes unreachable.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, AuthorizationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from controlplane.refusals import Refused, field_errors, summary

logger = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "throttled",
    500: "internal",
    503: "unavailable",
}
# Where ninja says a value came from; the client only cares about the field name.
_SOURCES = {"body", "query", "path", "form", "file", "header", "cookie"}
# Body parameters are all called ``payload`` in the routers; drop it from field paths.
_PARAM_NAMES = {"payload"}


class ApiError(HttpError):
    """An API failure with a stable code and optional per-field messages."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        fields: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.code = code or CODES.get(status, "error")
        self.fields = fields or {}
        self.extra = extra or {}


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def envelope(
    status: int,
    message: str,
    *,
    code: str | None = None,
    fields: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> JsonResponse:
    body: dict[str, Any] = {
        "code": code or CODES.get(status, "error"),
        "message": message,
        "fields": fields or {},
    }
    body.update(extra or {})
    return JsonResponse({"error": body}, status=status)


def _ninja_fields(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in _SOURCES:
            loc = loc[1:]
        if len(loc) > 1 and loc[0] in _PARAM_NAMES:
            loc = loc[1:]
        name = ".".join(loc) or "__all__"
        fields.setdefault(name, []).append(str(error.get("msg", "invalid value")))
    return fields


def install(api: NinjaAPI) -> None:
    """Route every exception the API can meet through the envelope."""

    @api.exception_handler(ApiError)
    def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return envelope(
            exc.status_code, exc.message, code=exc.code, fields=exc.fields, extra=exc.extra
        )

    @api.exception_handler(AuthenticationError)
    def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        message = exc.message
        if message == "Unauthorized":  # ninja's default when no credentials came at all
            message = "authentication required: send 'Authorization: Bearer <API token>'"
        response = envelope(401, message)
        response["WWW-Authenticate"] = 'Bearer realm="crawlfleet"'
        return response

    @api.exception_handler(AuthorizationError)
    def _forbidden(request: HttpRequest, exc: AuthorizationError) -> HttpResponse:
        return envelope(403, exc.message)

    @api.exception_handler(HttpError)
    def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        return envelope(exc.status_code, exc.message)

    @api.exception_handler(NinjaValidationError)
    def _invalid(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        fields = _ninja_fields(exc.errors)
        return envelope(422, summary(fields), fields=fields)

    @api.exception_handler(DjangoValidationError)
    def _model_invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        fields = field_errors(exc)
        return envelope(422, summary(fields), fields=fields)

    @api.exception_handler(Refused)
    def _refused(request: HttpRequest, exc: Refused) -> HttpResponse:
        results = getattr(exc, "results", None)  # a deploy's per-node outcomes
        extra = {"nodes": [r.as_dict() for r in results]} if results else None
        return envelope(exc.status, exc.message, code=exc.code, fields=exc.fields, extra=extra)

    @api.exception_handler(IntegrityError)
    def _conflict(request: HttpRequest, exc: IntegrityError) -> HttpResponse:
        # Pre-checks catch the usual duplicates; this is a concurrent writer winning the race.
        return envelope(409, "conflicts with a change made at the same time; try again")

    @api.exception_handler(Http404)
    def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return envelope(404, str(exc) or "not found")

    @api.exception_handler(Exception)
    def _crash(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return envelope(500, "internal error; the control plane log has the details")
