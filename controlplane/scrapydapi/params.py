"""Reading a Scrapyd call's parameters as Scrapyd reads them: query string and form body alike.

A request whose parameters cannot be read at all (a multipart body without a boundary or cut
short, more fields than Django parses, a body over the limit) is refused here with a 4xx in
Scrapyd's envelope, before any endpoint runs. Values with NUL characters are refused too: no
name, id or argument has one, and PostgreSQL cannot store or compare them.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError

from controlplane.lib.eggs import MAX_EGG_BYTES
from controlplane.scrapydapi.responses import ScrapydRefusal

# An egg and the few form fields beside it.
MAX_BODY_BYTES = max(MAX_EGG_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + 1024 * 1024


def _content_length(request: HttpRequest) -> int:
    raw = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise ScrapydRefusal(f"invalid Content-Length {raw!r}", 400) from None
    if length < 0:
        raise ScrapydRefusal(f"invalid Content-Length {raw!r}", 400)
    return length


def _check_multipart(request: HttpRequest) -> None:
    if request.content_type != "multipart/form-data":
        return
    boundary = (request.content_params or {}).get("boundary", "")
    if not boundary:
        raise ScrapydRefusal("multipart/form-data needs a boundary parameter", 400)


class Params:
    """One call's parameters; ``take`` removes what it reads, so the rest are spider args."""

    def __init__(self, request: HttpRequest) -> None:
        if _content_length(request) > MAX_BODY_BYTES:
            raise ScrapydRefusal(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
        _check_multipart(request)
        self.values: dict[str, list[str]] = {}
        try:
            for source in (request.GET, request.POST):
                for key in source:
                    self.values.setdefault(key, []).extend(source.getlist(key))
            self.files = request.FILES
        except MultiPartParserError as exc:
            raise ScrapydRefusal(f"malformed multipart body: {exc}", 400) from None
        except (TooManyFieldsSent, TooManyFilesSent) as exc:
            raise ScrapydRefusal(f"too many parameters: {exc}", 400) from None
        except RequestDataTooBig as exc:
            raise ScrapydRefusal(f"the body is too large: {exc}", 413) from None
        for key, values in self.values.items():
            if "\x00" in key or any("\x00" in value for value in values):
                raise ScrapydRefusal(f"{key.replace(chr(0), '')!r} is invalid: NUL character")

    def take(self, name: str, *, required: bool = True, default: str | None = None) -> str | None:
        values = self.values.pop(name, None)
        if not values:
            if required:
                raise ScrapydRefusal(f"'{name}' parameter is required")
            return default
        return values[0]

    def take_all(self, name: str) -> list[str]:
        return self.values.pop(name, [])

    def rest(self) -> dict[str, str]:
        """What is left: the spider's arguments (first value of each, as Scrapyd keeps)."""
        return {key: values[0] for key, values in self.values.items() if values}
