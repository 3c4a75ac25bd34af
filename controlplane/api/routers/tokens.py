"""API tokens (admin): the secret is in the creation response only, never again."""

from __future__ import annotations

from django.db import IntegrityError
from django.http import HttpRequest
from ninja import Router, Status

from controlplane.api.auth import ADMIN
from controlplane.api.errors import ApiError, not_found
from controlplane.api.models import ApiToken
from controlplane.api.schemas import TokenCreatedOut, TokenIn, TokenOut
from controlplane.validators import NAME_RE

router = Router(tags=["tokens"])


@router.get("", response=list[TokenOut], auth=ADMIN)
def list_tokens(request: HttpRequest) -> list[ApiToken]:
    return list(ApiToken.objects.all())


@router.post("", response={201: TokenCreatedOut}, auth=ADMIN)
def create_token(request: HttpRequest, payload: TokenIn) -> Status:
    if not NAME_RE.match(payload.name):
        raise ApiError(
            422, f"invalid token name {payload.name!r}", fields={"name": ["letters, digits, _.-"]}
        )
    if ApiToken.objects.filter(name=payload.name).exists():
        raise ApiError(409, f"a token named {payload.name!r} exists", fields={"name": ["taken"]})
    try:
        token, secret = ApiToken.create(payload.name, payload.role)
    except IntegrityError:
        raise ApiError(409, f"a token named {payload.name!r} exists") from None
    body = {**TokenOut.from_orm(token).dict(), "secret": secret}
    return Status(201, body)


@router.post("/{token_id}/revoke", response=TokenOut, auth=ADMIN)
def revoke_token(request: HttpRequest, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(pk=token_id).first()
    if token is None:
        raise not_found(f"token {token_id}")
    token.revoked = True
    token.save(update_fields=["revoked"])
    return token
