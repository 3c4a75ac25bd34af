"""Routing: queued events become deliveries, one per matching rule, folded by group.

- Each event is claimed with ``UPDATE ... SET routed_at WHERE routed_at IS NULL`` in the same
  transaction that files it, so two senders never route it twice and a crash routes it again.
- An event joins the open (pending) delivery of its rule and group if there is one: a node that
  flaps fills one delivery, not fifty. The partial unique constraint allows one open delivery per
  (rule, group); a router that loses the insert race folds into the winner's.
- After a delivery of a group was sent, repeats within the rule's cooldown wait in one digest
  delivery, sent when the cooldown ends.
- During the rule's quiet hours every event of the rule joins one held delivery, sent as one
  summary when the period ends.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.alerts.models import AlertEvent, AlertRule, Delivery
from controlplane.alerts.quiet import rule_quiet_until

logger = logging.getLogger(__name__)

ROUTE_BATCH = 200
# The group of a rule's delivery held during quiet hours: every event of the rule joins it.
QUIET_GROUP = "quiet-hours"
FOLD_TRIES = 5


def route_batch(now: datetime | None = None, limit: int = ROUTE_BATCH) -> int:
    """Route up to ``limit`` queued events, oldest first; returns how many this call routed."""
    now = now or timezone.now()
    ids = list(
        AlertEvent.objects.filter(routed_at__isnull=True)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return 0
    rules = list(AlertRule.objects.filter(enabled=True, channel__enabled=True))
    routed = 0
    for pk in ids:
        with transaction.atomic():
            claimed = AlertEvent.objects.filter(pk=pk, routed_at__isnull=True).update(routed_at=now)
            if not claimed:
                continue  # another sender routed it
            event = AlertEvent.objects.get(pk=pk)
            for rule in rules:
                if rule.matches(event):
                    fold(rule, event, now)
        routed += 1
    return routed


def fold(rule: AlertRule, event: AlertEvent, now: datetime) -> Delivery:
    """File ``event`` under ``rule``: into the open delivery of its group, or a new one."""
    held_until = rule_quiet_until(rule, now)
    group = QUIET_GROUP if held_until else event.group_key
    for _ in range(FOLD_TRIES):
        open_delivery = Delivery.objects.filter(
            rule=rule, group_key=group, state=Delivery.State.PENDING
        ).first()
        if open_delivery is not None:
            if _join(open_delivery, event):
                return open_delivery
            continue  # claimed for sending meanwhile: look again
        not_before, digest = first_send_time(rule, group, now)
        if held_until is not None:
            not_before = max(not_before, held_until)
        try:
            with transaction.atomic():
                delivery = Delivery.objects.create(
                    rule=rule,
                    channel_id=rule.channel_id,
                    group_key=group,
                    digest=digest,
                    not_before=not_before,
                    event_count=1,
                    first_event_at=event.created_at,
                    last_event_at=event.created_at,
                    created_at=now,
                )
                delivery.events.add(event)
            return delivery
        except IntegrityError:
            continue  # another router opened this group's delivery first: fold into it
    raise RuntimeError(f"could not file event {event.pk} under rule {rule.name}")


def _join(delivery: Delivery, event: AlertEvent) -> bool:
    """Add ``event`` to ``delivery`` if it is still open; the conditional update holds the row,
    so a sender cannot claim it between the count and the link."""
    joined = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.PENDING).update(
        event_count=F("event_count") + 1, last_event_at=event.created_at, updated_at=timezone.now()
    )
    if joined:
        delivery.events.add(event)
    return bool(joined)


def first_send_time(rule: AlertRule, group: str, now: datetime) -> tuple[datetime, bool]:
    """When a new delivery of ``group`` may go out, and whether it is a cooldown digest."""
    last = (
        Delivery.objects.filter(
            rule=rule,
            group_key=group,
            state__in=[Delivery.State.SENDING, Delivery.State.SENT],
        )
        .order_by("-created_at", "-id")
        .only("sent_at", "claimed_at", "created_at")
        .first()
    )
    if last is None or not rule.cooldown:
        return now, False
    base = last.sent_at or last.claimed_at or last.created_at
    ends = base + timedelta(seconds=rule.cooldown)
    return (ends, True) if ends > now else (now, False)
