"""Who may read /metrics: a bearer token, an allowed client address, or both (settings).

``CRAWLFLEET_METRICS_TOKEN``: when set, ``Authorization: Bearer <token>`` is required (compared
in constant time); an API token with at least the viewer role is accepted as well, so a
scrape credential can be issued and revoked on the dashboard. ``CRAWLFLEET_METRICS_ALLOW``:
comma-separated networks the client address must be in. Unset, it is loopback only when no
token is set, and any address when one is. The address is the connection's (``REMOTE_ADDR``):
behind a reverse proxy, that is the proxy's (see docs/METRICS.md).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from controlplane.accounts.models import ApiToken
from controlplane.accounts.roles import Role

LOOPBACK = ("127.0.0.1/32", "::1/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Policy:
    token: str
    networks: tuple[Network, ...] | None  # None: any address


@lru_cache(maxsize=8)
def _policy(token: str, allow: str | None) -> Policy:
    entries = [e.strip() for e in (allow or "").split(",") if e.strip()]
    if not entries:
        return Policy(token, None if token else parse_networks(LOOPBACK))
    return Policy(token, parse_networks(entries))


def parse_networks(entries: tuple[str, ...] | list[str]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as exc:
        raise ImproperlyConfigured(f"CRAWLFLEET_METRICS_ALLOW: {exc}") from exc


def policy() -> Policy:
    return _policy(settings.CRAWLFLEET_METRICS_TOKEN, settings.CRAWLFLEET_METRICS_ALLOW)


def address_allowed(address: str, networks: tuple[Network, ...] | None) -> bool:
    if networks is None:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # no address (a unix socket) or a malformed one
    if ip.version == 6 and ip.ipv4_mapped is not None:  # a v4 client on a dual-stack socket
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def token_valid(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return False
    if secrets.compare_digest(given.encode(), token.encode()):
        return True
    api_token = ApiToken.authenticate(given)
    return api_token is not None and api_token.allows(Role.VIEWER)


def _refuse(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="crawlfleet metrics"'
    return response


def refusal(request: HttpRequest) -> HttpResponse | None:
    """The answer for a caller who may not read the metrics (403, 401); None if they may."""
    rules = policy()
    if not address_allowed(request.META.get("REMOTE_ADDR", ""), rules.networks):
        return _refuse(403, "metrics are not served to this address (CRAWLFLEET_METRICS_ALLOW)")
    if rules.token and not token_valid(request.headers.get("Authorization", ""), rules.token):
        return _refuse(401, "metrics need 'Authorization: Bearer <token>'")
    return None
