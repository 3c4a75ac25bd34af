"""Alerting: channels and rules (admin), the delivery history (viewer), test alerts (admin).

The rules (validation, write-only secrets, audit) are :mod:`controlplane.alerts.services`,
shared with the dashboard. See docs/ALERTS.md.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router, Status

from controlplane import keyset
from controlplane.alerts import services
from controlplane.alerts.models import AlertRule, Channel, Delivery
from controlplane.api.alerts_schemas import (
    ChannelIn,
    ChannelOut,
    ChannelPatch,
    DeliveryOut,
    DeliveryPageOut,
    DeliveryQueryIn,
    RuleIn,
    RuleOut,
    RulePatch,
)
from controlplane.api.auth import ADMIN, VIEWER
from controlplane.api.errors import not_found

router = Router(tags=["alerts"])


def _channel(channel_id: int) -> Channel:
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        raise not_found(f"channel {channel_id}")
    return channel


def _rule(rule_id: int) -> AlertRule:
    rule = AlertRule.objects.select_related("channel", "project", "task").filter(pk=rule_id).first()
    if rule is None:
        raise not_found(f"rule {rule_id}")
    return rule


# --- channels -----------------------------------------------------------------------------------
@router.get("/channels", response=list[ChannelOut], auth=ADMIN, summary="List channels")
def list_channels(request: HttpRequest) -> list[Channel]:
    return list(Channel.objects.all())


@router.post("/channels", response={201: ChannelOut}, auth=ADMIN, summary="Add a channel")
def create_channel(request: HttpRequest, payload: ChannelIn) -> Status:
    return Status(201, services.create_channel(payload.dict(), actor=request.actor))


@router.get("/channels/{channel_id}", response=ChannelOut, auth=ADMIN)
def get_channel(request: HttpRequest, channel_id: int) -> Channel:
    return _channel(channel_id)


@router.patch("/channels/{channel_id}", response=ChannelOut, auth=ADMIN)
def update_channel(request: HttpRequest, channel_id: int, payload: ChannelPatch) -> Channel:
    """Secrets left out (or null) are kept."""
    data = payload.dict(exclude_unset=True)
    return services.update_channel(_channel(channel_id), data, actor=request.actor)


@router.delete("/channels/{channel_id}", response={204: None}, auth=ADMIN)
def delete_channel(request: HttpRequest, channel_id: int) -> Status:
    """Its rules and delivery history go with it."""
    services.delete_channel(_channel(channel_id), actor=request.actor)
    return Status(204, None)


@router.post(
    "/channels/{channel_id}/test",
    response=DeliveryOut,
    auth=ADMIN,
    summary="Send a test alert now",
)
def test_channel(request: HttpRequest, channel_id: int) -> Delivery:
    """Sends at once; the answer's ``state`` (sent or failed) and ``last_error`` say how it went."""
    delivery = services.send_test(_channel(channel_id), actor=request.actor)
    return Delivery.objects.select_related("rule", "channel").get(pk=delivery.pk)


# --- rules --------------------------------------------------------------------------------------
@router.get("/rules", response=list[RuleOut], auth=VIEWER, summary="List alert rules")
def list_rules(request: HttpRequest) -> list[AlertRule]:
    return list(AlertRule.objects.select_related("channel", "project", "task"))


@router.post("/rules", response={201: RuleOut}, auth=ADMIN, summary="Add an alert rule")
def create_rule(request: HttpRequest, payload: RuleIn) -> Status:
    return Status(201, services.create_rule(payload.dict(), actor=request.actor))


@router.get("/rules/{rule_id}", response=RuleOut, auth=VIEWER)
def get_rule(request: HttpRequest, rule_id: int) -> AlertRule:
    return _rule(rule_id)


@router.patch("/rules/{rule_id}", response=RuleOut, auth=ADMIN)
def update_rule(request: HttpRequest, rule_id: int, payload: RulePatch) -> AlertRule:
    data = payload.dict(exclude_unset=True)
    return services.update_rule(_rule(rule_id), data, actor=request.actor)


@router.delete("/rules/{rule_id}", response={204: None}, auth=ADMIN)
def delete_rule(request: HttpRequest, rule_id: int) -> Status:
    """Its unsent deliveries go with it; sent ones stay in the history."""
    services.delete_rule(_rule(rule_id), actor=request.actor)
    return Status(204, None)


# --- deliveries ---------------------------------------------------------------------------------
@router.get("/deliveries", response=DeliveryPageOut, auth=VIEWER, summary="Delivery history")
def list_deliveries(request: HttpRequest, filters: Query[DeliveryQueryIn]) -> dict:
    """Newest first, with every attempt. Follow ``next_cursor`` until it is null."""
    keyset.require_valid(filters.cursor)  # a cursor that is not ours never reads as page one
    channel = None
    if filters.channel:
        channel = Channel.objects.filter(name=filters.channel).first()
        if channel is None:
            raise not_found(f"channel {filters.channel!r}")
    page = services.deliveries(
        state=filters.state, channel=channel, cursor=filters.cursor, limit=filters.limit
    )
    return {"items": page.rows, "next_cursor": page.next_cursor}


@router.get("/deliveries/{delivery_id}", response=DeliveryOut, auth=VIEWER)
def get_delivery(request: HttpRequest, delivery_id: int) -> Delivery:
    delivery = (
        Delivery.objects.select_related("rule", "channel")
        .prefetch_related("history")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise not_found(f"delivery {delivery_id}")
    return delivery
