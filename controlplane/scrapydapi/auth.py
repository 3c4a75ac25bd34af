"""HTTP basic auth whose password is an API token, as scrapy.cfg targets and every client send.

The username is free (Scrapyd clients always send one); the token's role decides what the call
may do. A missing or wrong password gets 401 with ``WWW-Authenticate``, as Scrapyd answers.
"""

from __future__ import annotations

import base64
import binascii

from django.http import HttpRequest, HttpResponse

from controlplane.accounts.audit import Actor, client_ip
from controlplane.accounts.models import ApiToken

REALM = 'Basic realm="crawlfleet Scrapyd API"'


class Unauthorized(Exception):
    pass


def actor_from_basic_auth(request: HttpRequest) -> Actor:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("credentials required: HTTP basic auth with an API token as password")
    try:
        _user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed basic credentials") from None
    token = ApiToken.authenticate(password)
    if token is None:
        raise Unauthorized("invalid or revoked API token")
    return Actor("token", token.name, token.role, ip=client_ip(request), token=token)


def unauthorized(message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=401, content_type="text/plain; charset=utf-8")
    response["WWW-Authenticate"] = REALM
    return response
