"""Managing people's accounts: the rules every face shares, each change audited.

An admin cannot lock themselves out (deactivate or demote their own account), and the fleet
always keeps one active admin: the checks lock the admins' rows first, so two admins demoting each
other at the same moment cannot both succeed. Passwords go through Django's validators and never
reach the audit trail.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from controlplane.accounts import audit
from controlplane.accounts.roles import RANK, Role, role_of, set_role
from controlplane.refusals import Refused


def people() -> QuerySet:
    """Every account, with its groups fetched in one query (for their roles)."""
    return get_user_model().objects.prefetch_related("groups").order_by("username")


def role_label(user: Any) -> str | None:
    """The role of ``user`` even when inactive (``role_of`` says None for an inactive user)."""
    if user.is_superuser:
        return Role.ADMIN
    names = {group.name for group in user.groups.all()}
    for role in reversed(RANK):
        if role in names:
            return role
    return Role.VIEWER if user.is_staff else None


def _active_admins() -> QuerySet:
    return get_user_model().objects.filter(
        Q(is_superuser=True) | Q(groups__name=Role.ADMIN), is_active=True
    )


def _keeps_an_admin(user: Any, action: str) -> None:
    """Refuse ``action`` when ``user`` is the last active admin. Call inside a transaction."""
    if role_of(user) != Role.ADMIN:
        return
    # Lock every active admin's row: a concurrent demotion waits here and then sees this one.
    admins = set(
        get_user_model()
        .objects.select_for_update()
        .filter(pk__in=_active_admins().values("pk"))
        .values_list("pk", flat=True)
    )
    if admins <= {user.pk}:
        raise Refused(
            f"{user.get_username()} is the last active admin; make someone else an admin first",
            code="conflict",
            status=409,
            fields={
                "role" if action == "demote" else "__all__": ["the last admin cannot be removed"]
            },
        )


def _not_self(user: Any, actor: audit.Actor | None, what: str) -> None:
    acting = getattr(actor, "user", None)
    if acting is not None and acting.pk == user.pk:
        raise Refused(
            f"you cannot {what} your own account",
            code="forbidden",
            status=403,
            fields={"role" if what == "demote" else "__all__": [f"you cannot {what} yourself"]},
        )


def _check_password(password: str, user: Any) -> None:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise Refused("the password was not accepted", fields={"password": exc.messages}) from None


def create_user(
    username: str, role: str, password: str, *, actor: audit.Actor | None = None
) -> AbstractBaseUser:
    """A new active account with ``role``; nothing is created when any value is refused."""
    model = get_user_model()
    fields: dict[str, list[str]] = {}
    candidate = model(username=username)
    try:
        candidate.clean_fields(exclude=[f.name for f in model._meta.fields if f.name != "username"])
    except ValidationError as exc:
        fields.update(exc.message_dict)
    if "username" not in fields and model.objects.filter(username__iexact=username).exists():
        fields["username"] = ["an account with this name exists"]
    if role not in RANK:
        fields["role"] = [f"one of {', '.join(RANK)}"]
    try:
        password_validation.validate_password(password, candidate)
    except ValidationError as exc:
        fields["password"] = exc.messages
    if fields:
        status = 409 if fields.get("username") == ["an account with this name exists"] else 422
        raise Refused("the account was not created", status=status, fields=fields)
    try:
        with transaction.atomic():
            user = model.objects.create_user(username=username, password=password)
            set_role(user, role)
            audit.record(actor, "user.create", username, role=role)
    except IntegrityError:
        raise Refused(
            f"an account named {username!r} exists",
            code="conflict",
            status=409,
            fields={"username": ["an account with this name exists"]},
        ) from None
    return user


def set_user_role(user: Any, role: str, *, actor: audit.Actor | None = None) -> None:
    """Give ``user`` exactly ``role`` (a superuser given a lower role stops being one)."""
    if role not in RANK:
        raise Refused(f"unknown role {role!r}", fields={"role": [f"one of {', '.join(RANK)}"]})
    old = role_label(user)
    if old == role:
        return
    with transaction.atomic():
        if role != Role.ADMIN:
            _not_self(user, actor, "demote")
            _keeps_an_admin(user, "demote")
        set_role(user, role)
        if user.is_superuser and role != Role.ADMIN:
            user.is_superuser = False
            user.save(update_fields=["is_superuser"])
        audit.record(actor, "user.role", user.get_username(), changes={"role": [old, role]})


def deactivate(user: Any, *, actor: audit.Actor | None = None) -> None:
    """The account can no longer log in; its open sessions stop working on their next request."""
    if not user.is_active:
        return
    with transaction.atomic():
        _not_self(user, actor, "deactivate")
        _keeps_an_admin(user, "deactivate")
        user.is_active = False
        # Conditional, so two admins clicking at once record one deactivation.
        if type(user).objects.filter(pk=user.pk, is_active=True).update(is_active=False):
            audit.record(actor, "user.deactivate", user.get_username())


def reactivate(user: Any, *, actor: audit.Actor | None = None) -> None:
    if user.is_active:
        return
    with transaction.atomic():
        user.is_active = True
        if type(user).objects.filter(pk=user.pk, is_active=False).update(is_active=True):
            audit.record(actor, "user.reactivate", user.get_username())


def set_password(user: Any, password: str, *, actor: audit.Actor | None = None) -> None:
    """A new password (validated); the user's other sessions end, as with Django's own form."""
    _check_password(password, user)
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        audit.record(actor, "user.password", user.get_username())
