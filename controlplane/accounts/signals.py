"""Logins, logouts and failed logins go to the audit trail, from every login form alike."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from controlplane.accounts import audit
from controlplane.accounts.roles import role_of


def _user_actor(user: Any, request: Any) -> audit.Actor:
    return audit.Actor("user", user.get_username(), role_of(user), ip=audit.client_ip(request))


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit.record(_user_actor(user, request), "login")


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(_user_actor(user, request), "logout")


@receiver(user_login_failed)
def _login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    # Only the username is kept: the credentials also hold the password that was tried.
    name = str(credentials.get("username", ""))[:150]
    actor = audit.Actor("anonymous", name, None, ip=audit.client_ip(request))
    audit.record(actor, "login_failed", name)
