"""Who is calling the API, and may they: API tokens and logged-in staff users, with roles.

Machines (CI, nodes, scripts) send ``Authorization: Bearer <token>``; the token's role decides.
People logged into the dashboard use their Django session, with their role
(:mod:`controlplane.accounts.roles`). Session calls that change
something must carry the CSRF token, as any form post would; token calls need none, because a
browser never attaches a bearer token on its own.

Roles: viewer reads; operator also runs, cancels, retries and deploys; admin also manages nodes
and tokens. ``node`` tokens may only register nodes (admins may too).
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError
from ninja.security.base import AuthBase
from ninja.utils import check_csrf

from controlplane.accounts.audit import Actor, client_ip
from controlplane.accounts.models import ApiToken
from controlplane.accounts.roles import Role, role_of

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class ApiAuth(AuthBase):
    """Bearer token or a logged-in user's session, and at least ``role``."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self, role: str) -> None:
        self.role = role
        super().__init__()

    def __call__(self, request: HttpRequest) -> Actor:
        header = request.headers.get("Authorization", "")
        actor = self._from_token(request, header) if header else self._from_session(request)
        if not actor.allows(self.role):
            raise AuthorizationError(
                message=f"this needs the {self.role} role; {actor} has the {actor.role} role"
            )
        request.actor = actor  # type: ignore[attr-defined]
        return actor

    @staticmethod
    def _from_token(request: HttpRequest, header: str) -> Actor:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError(
                message="malformed Authorization header: use 'Bearer <token>'"
            )
        token = ApiToken.authenticate(secret.strip())
        if token is None:
            raise AuthenticationError(message="invalid or revoked API token")
        return Actor("token", token.name, token.role, ip=client_ip(request), token=token)

    @staticmethod
    def _from_session(request: HttpRequest) -> Actor:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            raise AuthenticationError()
        role = role_of(user)
        if role is None:
            raise AuthorizationError(message="this account has no role; ask an admin for one")
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise AuthorizationError(message="CSRF check failed: send the X-CSRFToken header")
        return Actor("user", user.get_username(), role, ip=client_ip(request), user=user)


VIEWER = ApiAuth(Role.VIEWER)
OPERATOR = ApiAuth(Role.OPERATOR)
ADMIN = ApiAuth(Role.ADMIN)
NODE = ApiAuth(Role.NODE)
