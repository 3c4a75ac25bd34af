"""The three roles people and tokens have, and how a Django user gets one.

viewer reads; operator also deploys, edits tasks, runs, cancels and retries; admin also manages
nodes, users and tokens. A user's role is the highest of the groups ``admin``, ``operator`` and
``viewer`` they belong to; a superuser is an admin; a staff user without a role group is a viewer
(least privilege until an admin grants more). Anyone else has no role and sees nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import models, transaction


class Role(models.TextChoices):
    ADMIN = "admin", "admin"
    OPERATOR = "operator", "operator"
    VIEWER = "viewer", "viewer"
    NODE = "node", "node (registration only)"


# People's roles, lowest first; ``node`` is a token-only role apart from this order.
RANK: list[str] = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
USER_ROLES: list[tuple[str, str]] = [(r, Role(r).label) for r in reversed(RANK)]


def allows(have: str | None, need: str) -> bool:
    """Does role ``have`` include ``need``? admin > operator > viewer; node is apart."""
    if have is None:
        return False
    if Role.NODE in (have, need):
        return have in (need, Role.ADMIN)
    return RANK.index(have) >= RANK.index(need)


_REMEMBERED = "_crawlfleet_role"  # on a user object: (its role,), once looked up


def role_of(user: Any) -> str | None:
    """The role of a Django user, or None when the user may see nothing.

    Remembered on the user object, so the checks and the templates of one request cost one
    query; :func:`set_role` forgets it.
    """
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return None
    if user.is_superuser:
        return Role.ADMIN
    remembered = getattr(user, _REMEMBERED, None)
    if remembered is not None:
        return remembered[0]
    groups = set(user.groups.values_list("name", flat=True))
    role = next((r for r in reversed(RANK) if r in groups), Role.VIEWER if user.is_staff else None)
    setattr(user, _REMEMBERED, (role,))
    return role


def set_role(user: Any, role: str) -> None:
    """Make ``role`` the user's one role group (other role groups are removed)."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(RANK)}")
    with transaction.atomic():
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in RANK}
        user.groups.remove(*[g for name, g in groups.items() if name != role])
        user.groups.add(groups[role])
    if getattr(user, _REMEMBERED, None) is not None:
        delattr(user, _REMEMBERED)
