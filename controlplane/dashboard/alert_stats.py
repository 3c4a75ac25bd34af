"""What the alerts pages read: channels with their latest delivery, a page of the delivery history
with each row's first event, one delivery with its events and attempts. Each a fixed number of
queries, whatever the number of rows; the history pages through the service's keyset cursor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from controlplane.alerts import services
from controlplane.alerts.models import AlertEvent, AlertRule, Channel, Delivery
from controlplane.keyset import Page

PAGE_SIZE = 50
EVENTS_SHOWN = 200


def channels() -> QuerySet[Channel]:
    """Every channel with the state and time of its newest delivery (the channel's newest-first
    index answers each subquery with one row)."""
    newest = Delivery.objects.filter(channel=OuterRef("pk")).order_by("-created_at", "-id")
    return Channel.objects.annotate(
        last_state=Subquery(newest.values("state")[:1]),
        last_at=Subquery(newest.values("created_at")[:1]),
        last_delivery=Subquery(newest.values("pk")[:1]),
    ).order_by("name")


def rules() -> QuerySet[AlertRule]:
    return AlertRule.objects.select_related("channel", "project", "task").order_by("name")


def delivery_page(
    state: str | None, channel: Channel | None, cursor: str | None, size: int = PAGE_SIZE
) -> Page:
    """A page of the history (the service's), each row with ``first_kind`` and ``first_summary``
    of its oldest event: one more query for the whole page, by the events' through table."""
    page = services.deliveries(state=state, channel=channel, cursor=cursor, limit=size)
    through = Delivery.events.through.objects.filter(delivery_id=OuterRef("pk")).order_by(
        "alertevent__created_at", "alertevent_id"
    )
    firsts = {
        pk: (kind, summary)
        for pk, kind, summary in Delivery.objects.filter(pk__in=[d.pk for d in page.rows])
        .annotate(
            first_kind=Subquery(through.values("alertevent__kind")[:1]),
            first_summary=Subquery(through.values("alertevent__summary")[:1]),
        )
        .values_list("pk", "first_kind", "first_summary")
    }
    for delivery in page.rows:
        delivery.first_kind, delivery.first_summary = firsts.get(delivery.pk, (None, None))
    return page


@dataclass
class DeliveryDetail:
    delivery: Delivery
    events: list[AlertEvent]
    more_events: int
    attempts: list[Any]


def delivery_detail(delivery_id: int) -> DeliveryDetail | None:
    delivery = (
        Delivery.objects.select_related("rule", "channel")
        .prefetch_related("history")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        return None
    events = list(delivery.events.order_by("created_at", "id")[: EVENTS_SHOWN + 1])
    more = max(0, delivery.event_count - EVENTS_SHOWN) if len(events) > EVENTS_SHOWN else 0
    return DeliveryDetail(delivery, events[:EVENTS_SHOWN], more, list(delivery.history.all()))
