"""Who is calling the API, and may they: API tokens and logged-in staff users, with roles.

Machines (CI, nodes, scripts) send ``Authorization: Bearer <token>``; the token's role decides.
People logged into the dashboard use their Django session: a superuser is an admin, a staff user
has the highest role among the groups ``admin``, ``operator`` and ``viewer`` they belong to, and
is a viewer otherwise (least privilege until someone grants more). Session calls that change
something must carry the CSRF token, as any form post would; token calls need none, because a
browser never attaches a bearer token on its own.

Roles: viewer reads; operator also runs, cancels, retries and deploys; admin also manages nodes
and tokens. ``node`` tokens may only register nodes (admins may too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from ninja.errors import AuthenticationError, AuthorizationError
from ninja.security.base import AuthBase
from ninja.utils import check_csrf

from controlplane.api.models import ApiToken

Role = ApiToken.Role
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_RANK = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]


def user_role(user: Any) -> str | None:
    """The role of a Django user, or None when the user may not use the API at all."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return None
    if user.is_superuser:
        return Role.ADMIN
    if not user.is_staff:
        return None
    groups = set(user.groups.values_list("name", flat=True))
    for role in reversed(_RANK):
        if role in groups:
            return role
    return Role.VIEWER


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a token or a user, with one role."""

    kind: str  # "token" or "user"
    name: str
    role: str
    token: ApiToken | None = None
    user: Any = None

    def allows(self, role: str) -> bool:
        if self.token is not None:
            return self.token.allows(role)
        if role == Role.NODE:
            return self.role == Role.ADMIN
        return _RANK.index(self.role) >= _RANK.index(role)

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"


class ApiAuth(AuthBase):
    """Bearer token or staff session, and at least ``role``."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __init__(self, role: str) -> None:
        self.role = role
        super().__init__()

    def __call__(self, request: HttpRequest) -> Principal:
        header = request.headers.get("Authorization", "")
        principal = self._from_token(header) if header else self._from_session(request)
        if not principal.allows(self.role):
            raise AuthorizationError(
                message=f"this needs the {self.role} role; {principal} has the {principal.role} role"
            )
        request.principal = principal  # type: ignore[attr-defined]
        return principal

    @staticmethod
    def _from_token(header: str) -> Principal:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError(
                message="malformed Authorization header: use 'Bearer <token>'"
            )
        token = ApiToken.authenticate(secret.strip())
        if token is None:
            raise AuthenticationError(message="invalid or revoked API token")
        return Principal("token", token.name, token.role, token=token)

    @staticmethod
    def _from_session(request: HttpRequest) -> Principal:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            raise AuthenticationError()
        role = user_role(user)
        if role is None:
            raise AuthorizationError(message="only staff users may use the API")
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise AuthorizationError(message="CSRF check failed: send the X-CSRFToken header")
        return Principal("user", user.get_username(), role, user=user)


VIEWER = ApiAuth(Role.VIEWER)
OPERATOR = ApiAuth(Role.OPERATOR)
ADMIN = ApiAuth(Role.ADMIN)
NODE = ApiAuth(Role.NODE)
