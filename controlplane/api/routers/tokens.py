"""API tokens (admin): the secret is in the creation response only, never again."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from controlplane.accounts import tokens
from controlplane.accounts.models import ApiToken
from controlplane.api.auth import ADMIN
from controlplane.api.errors import not_found
from controlplane.api.schemas import TokenCreatedOut, TokenIn, TokenOut

router = Router(tags=["tokens"])


@router.get("", response=list[TokenOut], auth=ADMIN)
def list_tokens(request: HttpRequest) -> list[ApiToken]:
    return list(ApiToken.objects.all())


@router.post("", response={201: TokenCreatedOut}, auth=ADMIN)
def create_token(request: HttpRequest, payload: TokenIn) -> Status:
    token, secret = tokens.create_token(payload.name, payload.role, actor=request.actor)
    return Status(201, {**TokenOut.from_orm(token).dict(), "secret": secret})


@router.post("/{token_id}/revoke", response=TokenOut, auth=ADMIN)
def revoke_token(request: HttpRequest, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(pk=token_id).first()
    if token is None:
        raise not_found(f"token {token_id}")
    return tokens.revoke_token(token, actor=request.actor)
