"""Every write to the REST API carries a body the API can read, or is refused with a 4xx.

Ninja reads a body only in the operations that declare one, after Django has parsed it, and
Django raises while parsing some bodies (a multipart body without a boundary, one larger than
allowed): those requests answered 500. Operations without a body never looked at it, so a
cancel sent with garbage went through, and a JSON array sent as a patch was read as an empty
patch. So the body of every POST, PUT, PATCH and DELETE under ``/api/`` is checked here, before
any view, and refused in the API's error envelope unless it is:

- empty (operations without a body; clients that send ``{}`` there are fine too), unless it
  claims to be multipart without a boundary, which Django fails to parse even when empty;
- ``application/json`` (or ``application/*+json``): UTF-8 JSON whose top level is an object,
  because every body the API takes is one, with no NUL character in a string (PostgreSQL
  stores none, so it would fail as a 500 deep in a save);
- ``multipart/form-data`` (egg uploads): a boundary, the closing delimiter, and parts Django
  can parse.

Anything else is 415, a body over the limit 413, a chunked body without a length 411 (Django
would silently read it as empty). The check runs before authentication, as a proxy's would:
only whether the body can be read is decided here; its fields are the operations' business.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError

from controlplane.api.errors import envelope

API_PREFIX = "/api/"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
JSON = "application/json"
MULTIPART = "multipart/form-data"
# Task definitions and spider reports are a few KiB (report stats are capped at 256 KiB).
MAX_JSON_BYTES = 1024 * 1024
_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


class BodyRefused(Exception):
    """The body cannot be read: the status and message to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_json(content_type: str) -> bool:
    return content_type == JSON or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_body(request: HttpRequest) -> None:
    """Raise ``BodyRefused`` unless the request's body is empty or readable as the API reads it."""
    length = _content_length(request)
    content_type = request.content_type or ""
    if length == 0:
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            raise BodyRefused(411, "a chunked body is not read: send it with a Content-Length")
        if content_type == MULTIPART:
            # Django parses even an empty multipart body, and without a boundary it raises.
            _boundary(request)
        return
    if is_json(content_type):
        _check_size(length, min(MAX_JSON_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE), content_type)
        _check_json(request.body)
    elif content_type == MULTIPART:
        _check_size(length, settings.DATA_UPLOAD_MAX_MEMORY_SIZE, content_type)
        _check_multipart(request)
    else:
        given = f"Content-Type {content_type}" if content_type else "no Content-Type"
        raise BodyRefused(
            415,
            f"a body with {given} is not accepted: send {JSON}, or {MULTIPART} to upload an egg",
        )


def _content_length(request: HttpRequest) -> int:
    raw = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise BodyRefused(400, f"invalid Content-Length {raw!r}") from None
    if length < 0:
        raise BodyRefused(400, f"invalid Content-Length {raw!r}")
    return length


def _check_size(length: int, limit: int, content_type: str) -> None:
    if length > limit:
        raise BodyRefused(
            413, f"the body is {length} bytes; at most {limit} are accepted as {content_type}"
        )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999 parses as infinity
        raise ValueError(f"{text} is out of range")
    return number


def _check_json(body: bytes) -> None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRefused(400, f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise BodyRefused(
            400, f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BodyRefused(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BodyRefused(400, f"the body must be a JSON object, not {_JSON_KINDS[type(data)]}")
    if "\\u0000" in text and _has_nul(data):
        raise BodyRefused(400, "the body has a NUL character (\\u0000) in a string")


def _has_nul(data: object) -> bool:
    """Whether a string in ``data`` holds NUL, which PostgreSQL cannot store (iterative: the
    parsed body may nest as deep as the JSON parser allows)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _boundary(request: HttpRequest) -> str:
    boundary = (request.content_params or {}).get("boundary", "")
    if not boundary:
        raise BodyRefused(400, f"{MULTIPART} needs a boundary parameter in the Content-Type")
    return boundary


def _check_multipart(request: HttpRequest) -> None:
    boundary = _boundary(request)
    body = request.body
    try:
        delimiter = f"--{boundary}--".encode("ascii")
    except UnicodeEncodeError:
        raise BodyRefused(400, "the multipart boundary is not ASCII") from None
    if delimiter not in body:
        raise BodyRefused(400, "the multipart body ends before its closing boundary (truncated)")
    try:
        if request.method == "POST":
            request.POST  # noqa: B018 -- parses POST and FILES once, kept for the view
        else:  # Django parses form bodies of POST only; validate the others the same way
            request.parse_file_upload(request.META, io.BytesIO(body))
    except MultiPartParserError as exc:
        raise BodyRefused(400, f"malformed multipart body: {exc}") from None
    except (TooManyFieldsSent, TooManyFilesSent) as exc:
        raise BodyRefused(400, f"multipart body with too many parts: {exc}") from None
    except RequestDataTooBig as exc:
        raise BodyRefused(413, f"multipart body too large: {exc}") from None


class RequestBodyMiddleware:
    """Refuse writes to the API whose body cannot be read (see the module docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        in_api = request.path_info.startswith(API_PREFIX)
        if request.method in WRITE_METHODS and in_api:
            try:
                check_body(request)
            except BodyRefused as refused:
                return envelope(refused.status, refused.message)
        response = self.get_response(request)
        if (
            in_api
            and response.status_code == 405
            and "json" not in response.get("Content-Type", "")
        ):
            # The router answers a wrong method in plain text; API clients read the envelope.
            allowed = response.get("Allow", "")
            refused = envelope(405, f"{request.method} is not allowed here; use {allowed}".strip())
            if allowed:
                refused["Allow"] = allowed
            return refused
        return response
