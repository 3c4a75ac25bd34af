"""Sending due deliveries, each claimed first, retried with exponential backoff.

- A pending delivery whose ``not_before`` has passed is claimed with ``UPDATE ... SET state =
  'sending' WHERE state = 'pending' AND attempts = <read>``: one sender wins, the others skip it.
- Events never join a delivery that is sending, so what is sent is what was claimed.
- A delivery still sending after CRAWLFLEET_ALERT_CLAIM_TIMEOUT belongs to a sender that died
  mid-send; another takes it over (conditional on the old ``claimed_at``) and sends it again: at
  least once across a crash, exactly once otherwise.
- A failed attempt goes back to pending after ``retry_delay(attempts)``; after
  CRAWLFLEET_ALERT_MAX_ATTEMPTS it is failed and logged. Every attempt is a
  :class:`DeliveryAttempt` row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.alerts import messages, transports
from controlplane.alerts.models import AlertEvent, Delivery, DeliveryAttempt
from controlplane.alerts.quiet import rule_quiet_until

logger = logging.getLogger(__name__)

SEND_BATCH = 20
P = Delivery.State


@dataclass
class SendResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0
    taken_over: int = 0


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base, 2x, 4x ... up to cap."""
    base = settings.CRAWLFLEET_ALERT_RETRY_BASE
    return min(settings.CRAWLFLEET_ALERT_RETRY_CAP, base * 2 ** max(0, attempts - 1))


def send_due(now: datetime | None = None, limit: int = SEND_BATCH) -> SendResult:
    """Send up to ``limit`` due deliveries (and take over stale claims)."""
    now = now or timezone.now()
    result = SendResult()
    stale_before = now - timedelta(seconds=settings.CRAWLFLEET_ALERT_CLAIM_TIMEOUT)
    stale = list(
        Delivery.objects.filter(state=P.SENDING, claimed_at__lt=stale_before)
        .select_related("rule", "channel")
        .order_by("claimed_at")[:limit]
    )
    due = list(
        Delivery.objects.filter(state=P.PENDING, not_before__lte=now)
        .select_related("rule", "channel")
        .order_by("not_before", "id")[: max(0, limit - len(stale))]
    )
    for delivery in stale:
        if _take_over(delivery, now):
            result.taken_over += 1
            _attempt(delivery, now, result)
    for delivery in due:
        held_until = rule_quiet_until(delivery.rule, now) if delivery.rule else None
        if held_until is not None:
            Delivery.objects.filter(pk=delivery.pk, state=P.PENDING).update(not_before=held_until)
            result.held += 1
            continue
        if _claim(delivery, now):
            _attempt(delivery, now, result)
    return result


def _claim(delivery: Delivery, now: datetime) -> bool:
    won = Delivery.objects.filter(
        pk=delivery.pk, state=P.PENDING, attempts=delivery.attempts
    ).update(state=P.SENDING, claimed_at=now, attempts=delivery.attempts + 1, updated_at=now)
    if won:
        delivery.state, delivery.claimed_at, delivery.attempts = (
            P.SENDING,
            now,
            delivery.attempts + 1,
        )
    return bool(won)


def _take_over(delivery: Delivery, now: datetime) -> bool:
    """Claim a delivery whose sender never finished; it may have gone out already."""
    won = Delivery.objects.filter(
        pk=delivery.pk, state=P.SENDING, claimed_at=delivery.claimed_at
    ).update(claimed_at=now, attempts=delivery.attempts + 1, updated_at=now)
    if won:
        logger.warning(
            "delivery %s was claimed at %s by a sender that never finished; sending it again",
            delivery.uid,
            delivery.claimed_at,
        )
        delivery.claimed_at, delivery.attempts = now, delivery.attempts + 1
    return bool(won)


def _attempt(delivery: Delivery, now: datetime, result: SendResult) -> None:
    """Send a claimed delivery once and record the attempt and its outcome."""
    claim = delivery.claimed_at
    started = timezone.now()
    message = None
    try:
        if delivery.test:  # a test alert whose sender (a web request) died mid-send
            message = messages.test_message(delivery.channel.name, str(delivery.uid), now)
        else:
            message = messages.compose(delivery)
        if not delivery.channel.enabled:
            raise transports.SendError(f"channel {delivery.channel.name} is disabled")
        transports.send(delivery.channel, message, str(delivery.uid))
        error = ""
    except transports.SendError as exc:
        error = str(exc)
    except Exception as exc:  # a bug or an unexpected library error: keep going, record it
        logger.exception("delivery %s: unexpected error", delivery.uid)
        error = f"{type(exc).__name__}: {exc}"[: transports.MAX_ERROR]
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        started_at=started,
        finished_at=timezone.now(),
        ok=not error,
        error=error,
    )
    subject = message.subject[:300] if message else ""
    if not error:
        if delivery.transition(
            P.SENDING, P.SENT, claim=claim, sent_at=now, last_error="", subject=subject
        ):
            result.sent += 1
        else:
            logger.warning(
                "delivery %s was sent, but another sender had taken it over", delivery.uid
            )
        return
    if delivery.attempts >= settings.CRAWLFLEET_ALERT_MAX_ATTEMPTS:
        if delivery.transition(P.SENDING, P.FAILED, claim=claim, last_error=error, subject=subject):
            result.failed += 1
            logger.error(
                "delivery %s to channel %s failed after %d attempts: %s",
                delivery.uid,
                delivery.channel.name,
                delivery.attempts,
                error,
            )
        return
    not_before = now + timedelta(seconds=retry_delay(delivery.attempts))
    if retry_later(delivery, claim, not_before, error, subject):
        result.retried += 1
        logger.warning(
            "delivery %s to channel %s failed (attempt %d), next try at %s: %s",
            delivery.uid,
            delivery.channel.name,
            delivery.attempts,
            not_before.isoformat(timespec="seconds"),
            error,
        )


def retry_later(
    delivery: Delivery, claim: datetime | None, not_before: datetime, error: str, subject: str
) -> bool:
    """Back to pending. If its group opened a new delivery meanwhile (events that came while
    this one was sending), that one's events join this one first: one open delivery a group."""
    for _ in range(3):
        try:
            with transaction.atomic():
                return delivery.transition(
                    P.SENDING,
                    P.PENDING,
                    claim=claim,
                    not_before=not_before,
                    claimed_at=None,
                    last_error=error,
                    subject=subject,
                )
        except IntegrityError:
            absorb_open(delivery)
    return False


def absorb_open(delivery: Delivery) -> None:
    """Move the events of the open delivery of ``delivery``'s group into ``delivery``."""
    with transaction.atomic():
        other = (
            Delivery.objects.filter(
                rule_id=delivery.rule_id, group_key=delivery.group_key, state=P.PENDING
            )
            .exclude(pk=delivery.pk)
            .first()
        )
        if other is None:
            return
        # Claim it first, so no sender sends it and no router adds to it while it is merged.
        if not other.transition(P.PENDING, P.SENDING, claimed_at=timezone.now()):
            return
        delivery.events.add(*other.events.all())
        Delivery.objects.filter(pk=delivery.pk).update(
            event_count=F("event_count") + other.event_count, last_event_at=other.last_event_at
        )
        other.delete()


def purge(now: datetime | None = None, limit: int = 1000) -> int:
    """Drop sent and failed deliveries and routed events older than CRAWLFLEET_ALERT_KEEP_DAYS."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.CRAWLFLEET_ALERT_KEEP_DAYS)
    old = list(
        Delivery.objects.filter(state__in=[P.SENT, P.FAILED], created_at__lt=cutoff).values_list(
            "pk", flat=True
        )[:limit]
    )
    deleted = Delivery.objects.filter(pk__in=old).delete()[0] if old else 0
    events = list(
        AlertEvent.objects.filter(routed_at__lt=cutoff)
        .exclude(deliveries__state__in=[P.PENDING, P.SENDING])
        .values_list("pk", flat=True)[:limit]
    )
    if events:
        deleted += AlertEvent.objects.filter(pk__in=events).delete()[0]
    return deleted
