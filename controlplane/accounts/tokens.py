"""Creating and revoking API tokens: the rules the REST API, the dashboard and the CLI share."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from controlplane.accounts import audit
from controlplane.accounts.models import ApiToken
from controlplane.accounts.roles import Role
from controlplane.refusals import Refused
from controlplane.validators import NAME_RE


def create_token(name: str, role: str, actor: audit.Actor | None = None) -> tuple[ApiToken, str]:
    """A new token and its secret, which is returned here once and stored only as a hash."""
    if not NAME_RE.match(name or ""):
        raise Refused(
            f"invalid token name {name!r}", fields={"name": ["letters, digits and _ . - only"]}
        )
    if role not in Role.values:
        raise Refused(
            f"unknown role {role!r}", fields={"role": [f"one of {', '.join(Role.values)}"]}
        )
    if ApiToken.objects.filter(name=name).exists():
        raise Refused(
            f"a token named {name!r} exists",
            code="conflict",
            status=409,
            fields={"name": ["taken"]},
        )
    try:
        with transaction.atomic():
            token, secret = ApiToken.create(name, role)
            audit.record(actor, "token.create", name, role=role, prefix=token.prefix)
    except IntegrityError:
        raise Refused(f"a token named {name!r} exists", code="conflict", status=409) from None
    return token, secret


def revoke_token(token: ApiToken, actor: audit.Actor | None = None) -> ApiToken:
    if not token.revoked:
        with transaction.atomic():
            ApiToken.objects.filter(pk=token.pk).update(revoked=True)
            token.revoked = True
            audit.record(actor, "token.revoke", token.name, role=token.role, prefix=token.prefix)
    return token
