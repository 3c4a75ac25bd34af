"""The audit trail: who did what, when, from where, with the fields a change touched.

Faces (REST API, dashboard) call :func:`record` with the :class:`Actor` they authenticated; the
values are copied as they are, except that anything that looks like a secret is replaced, so no
password, token or report token ever reaches the trail, whatever a caller passes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from controlplane.accounts.models import AuditEntry
from controlplane.accounts.roles import allows

SECRET_KEY_RE = re.compile(r"pass|secret|token|key|credential|authorization", re.IGNORECASE)
REDACTED = "(hidden)"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a logged-in user, an API token, or the system itself."""

    kind: str  # "user", "token", "anonymous" or "system"
    name: str
    role: str | None
    ip: str | None = None
    user: Any = None
    token: Any = None

    def allows(self, role: str) -> bool:
        if self.token is not None:
            return bool(self.token.allows(role))
        return allows(self.role, role)

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"


SYSTEM = Actor("system", "crawlfleet", None)


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer's address; a proxy in front sets REMOTE_ADDR through the WSGI server's config."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def scrub(value: Any, key: str = "") -> Any:
    """``value`` with every secret-looking entry replaced, at any depth."""
    if key and SECRET_KEY_RE.search(key):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the fields whose value differs."""
    return {
        key: [scrub(before.get(key), key), scrub(after.get(key), key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def record(actor: Actor | None, action: str, target: Any = "", **detail: Any) -> AuditEntry:
    actor = actor or SYSTEM
    return AuditEntry.objects.create(
        actor_kind=actor.kind,
        actor=actor.name[:150],
        action=action[:40],
        target=str(target)[:200],
        detail=scrub(detail),
        ip=actor.ip,
    )
