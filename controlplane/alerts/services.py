"""Channels, rules, the delivery history and test alerts: what the REST API and the dashboard
share. Every change is audited here, with secrets hidden; a problem is a
:class:`~controlplane.refusals.Refused` raised before anything is written.

Secrets (a webhook's signing key, apprise URLs) are write-only: a PATCH without them keeps
them, none is ever returned, and the audit trail only says that they changed.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane import keyset
from controlplane.accounts import audit
from controlplane.alerts import messages, transports
from controlplane.alerts.models import AlertRule, Channel, Delivery, DeliveryAttempt
from controlplane.alerts.validation import (
    CHANNEL_FIELDS,
    CHANNEL_SECRETS,
    check_fields,
    refuse,
    resolve_rule,
    validate_channel,
)
from controlplane.refusals import Refused

logger = logging.getLogger(__name__)

MAX_PAGE = 200
KIND_FIELDS = (
    ("url", Channel.Kind.WEBHOOK),
    ("secret", Channel.Kind.WEBHOOK),
    ("recipients", Channel.Kind.EMAIL),
    ("apprise_urls", Channel.Kind.APPRISE),
)


# --- channels -----------------------------------------------------------------------------------
def channel_snapshot(channel: Channel) -> dict[str, Any]:
    """The channel as the audit trail records it: secrets only as whether they are set (the
    keys name them secrets, so the trail's scrubber hides any value that slips through)."""
    return {
        "name": channel.name,
        "kind": channel.kind,
        "url": channel.url,
        "recipients": list(channel.recipients or []),
        "enabled": channel.enabled,
        "secret": "(set)" if channel.secret else "",
        "apprise_urls_secret": f"{len(channel.apprise_urls or [])} URL(s): "
        + ", ".join(channel.apprise_schemes)
        if channel.apprise_urls
        else "",
    }


def _apply_channel(channel: Channel, data: dict[str, Any]) -> None:
    check_fields(data, CHANNEL_FIELDS)
    nulls = {
        k: ["cannot be null"] for k, v in data.items() if v is None and k not in CHANNEL_SECRETS
    }
    refuse(nulls)
    for key, value in data.items():
        if key in CHANNEL_SECRETS and value is None:
            continue  # not given: kept
        if key == "url" and isinstance(value, str):
            value = value.strip()
        if key == "recipients" and isinstance(value, list):
            value = [v.strip() if isinstance(v, str) else v for v in value]
        setattr(channel, key, value)


def _save(actor: audit.Actor | None, action: str, target: str, save: Any, **detail: Any) -> None:
    try:
        with transaction.atomic():
            save()
            audit.record(actor, action, target, **detail)
    except IntegrityError:
        raise Refused(
            f"{target!r} was saved concurrently by someone else; try again",
            code="conflict",
            status=409,
        ) from None


def create_channel(data: dict[str, Any], actor: audit.Actor | None = None) -> Channel:
    channel = Channel()
    _apply_channel(channel, data)
    validate_channel(channel)
    _save(actor, "alerts.add_channel", channel.name, channel.save, fields=channel_snapshot(channel))
    return channel


def update_channel(
    channel: Channel, data: dict[str, Any], actor: audit.Actor | None = None
) -> Channel:
    """Change some fields; a secret left out (or null) is kept, an empty one is cleared."""
    before = channel_snapshot(channel)
    secrets_before = (channel.secret, list(channel.apprise_urls or []))
    _apply_channel(channel, data)
    if "kind" in data:  # what the old kind used and the new one does not is dropped
        for name, kind in KIND_FIELDS:
            if channel.kind != kind and name not in data:
                setattr(channel, name, [] if name in ("recipients", "apprise_urls") else "")
    try:
        validate_channel(channel)
    except Refused:
        channel.refresh_from_db()
        raise
    changed = audit.changes(before, channel_snapshot(channel))
    if (channel.secret, list(channel.apprise_urls)) != secrets_before:
        changed.setdefault("secret", [audit.REDACTED, audit.REDACTED])
    if not changed:
        return channel
    _save(actor, "alerts.update_channel", channel.name, channel.save, changes=changed)
    return channel


def delete_channel(channel: Channel, actor: audit.Actor | None = None) -> None:
    """Its rules and its delivery history go with it."""
    with transaction.atomic():
        audit.record(
            actor,
            "alerts.delete_channel",
            channel.name,
            fields=channel_snapshot(channel),
            rules=sorted(channel.rules.values_list("name", flat=True)),
        )
        channel.delete()


def send_test(
    channel: Channel, actor: audit.Actor | None = None, now: datetime | None = None
) -> Delivery:
    """Send a test alert now, in the caller's thread; the delivery (sent or failed) says how it
    went and stays in the history. Test alerts are not retried."""
    now = now or timezone.now()
    delivery = Delivery.objects.create(
        channel=channel,
        group_key="test",
        test=True,
        state=Delivery.State.SENDING,
        claimed_at=now,
        attempts=1,
        created_at=now,
        not_before=now,
        first_event_at=now,
        last_event_at=now,
    )
    message = messages.test_message(channel.name, str(delivery.uid), now)
    started = timezone.now()
    try:
        transports.send(channel, message, str(delivery.uid))
        error = ""
    except transports.SendError as exc:
        error = str(exc)
    except Exception as exc:
        logger.exception("test alert of channel %s", channel.name)
        error = f"{type(exc).__name__}: {exc}"[: transports.MAX_ERROR]
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=started,
        finished_at=timezone.now(),
        ok=not error,
        error=error,
    )
    state = Delivery.State.FAILED if error else Delivery.State.SENT
    delivery.transition(
        Delivery.State.SENDING,
        state,
        last_error=error,
        subject=message.subject,
        sent_at=None if error else timezone.now(),
    )
    audit.record(actor, "alerts.test_channel", channel.name, ok=not error, error=error)
    return delivery


# --- rules --------------------------------------------------------------------------------------
def rule_snapshot(rule: AlertRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "channel": rule.channel.name if rule.channel_id else None,
        "event_kinds": list(rule.event_kinds or []),
        "project": rule.project.name if rule.project_id else None,
        "task": rule.task.name if rule.task_id else None,
        "cooldown": rule.cooldown,
        "quiet_start": rule.quiet_start.isoformat("minutes") if rule.quiet_start else None,
        "quiet_end": rule.quiet_end.isoformat("minutes") if rule.quiet_end else None,
        "quiet_timezone": rule.quiet_timezone,
        "enabled": rule.enabled,
    }


def create_rule(data: dict[str, Any], actor: audit.Actor | None = None) -> AlertRule:
    rule = AlertRule()
    resolve_rule(rule, data)
    _save(actor, "alerts.add_rule", rule.name, rule.save, fields=rule_snapshot(rule))
    return rule


def update_rule(
    rule: AlertRule, data: dict[str, Any], actor: audit.Actor | None = None
) -> AlertRule:
    before = rule_snapshot(rule)
    try:
        resolve_rule(rule, data)
    except Refused:
        rule.refresh_from_db()
        raise
    changed = audit.changes(before, rule_snapshot(rule))
    if changed:
        _save(actor, "alerts.update_rule", rule.name, rule.save, changes=changed)
    return rule


def delete_rule(rule: AlertRule, actor: audit.Actor | None = None) -> None:
    """Its unsent deliveries go with it; the sent ones stay in the history."""
    with transaction.atomic():
        audit.record(actor, "alerts.delete_rule", rule.name, fields=rule_snapshot(rule))
        rule.deliveries.filter(state=Delivery.State.PENDING).delete()
        rule.delete()


# --- the delivery history -----------------------------------------------------------------------
def deliveries(
    *,
    state: str | None = None,
    channel: Channel | None = None,
    cursor: str | None = None,
    limit: int = keyset.DEFAULT_PAGE_SIZE,
) -> keyset.Page:
    """Newest first, by cursor; each row with its rule and channel, and its attempts prefetched."""
    if state is not None and state not in Delivery.State.values:
        refuse({"state": [f"one of {', '.join(Delivery.State.values)}"]})
    query = Delivery.objects.select_related("rule", "channel").prefetch_related("history")
    if state is not None:
        query = query.filter(state=state)
    if channel is not None:
        query = query.filter(channel=channel)
    return keyset.page(query, "created_at", cursor, max(1, min(limit, MAX_PAGE)))
