"""Who may see and do what on the dashboard.

Every page needs a login and a role (:mod:`controlplane.accounts.roles`). Reads need viewer;
anything that changes state is a POST (CSRF-checked by Django's middleware) and needs the role
its view names. A forged POST from a role that lacks it gets 403, whatever the page showed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from controlplane.accounts import audit
from controlplane.accounts.roles import Role, allows, role_of

View = Callable[..., HttpResponse]


def actor_of(request: HttpRequest) -> audit.Actor:
    user = request.user
    return audit.Actor(
        "user", user.get_username(), role_of(user), ip=audit.client_ip(request), user=user
    )


def requires(role: str = Role.VIEWER, *, post: bool = False) -> Callable[[View], View]:
    """Login, at least ``role``, and (``post=True``) POST only. Sets ``request.actor``."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if post and request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            have = role_of(request.user)
            if have is None:
                raise PermissionDenied("your account has no role; ask an admin for one")
            if not allows(have, role):
                raise PermissionDenied(f"this needs the {role} role; you have the {have} role")
            request.actor = actor_of(request)  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def access(request: HttpRequest) -> dict[str, Any]:
    """Template context: the user's role and what the page may offer them."""
    role = role_of(getattr(request, "user", None))
    return {
        "role": role,
        "can_operate": allows(role, Role.OPERATOR),
        "can_admin": allows(role, Role.ADMIN),
    }
