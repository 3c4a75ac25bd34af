"""What an alert says: a subject an operator understands at a glance, a text with the events and
links to their dashboard pages, and the JSON a webhook receives."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from controlplane.alerts.models import AlertEvent, Delivery
from controlplane.alerts.quiet import zone
from controlplane.alerts.routing import QUIET_GROUP
from controlplane.events import KINDS

PREFIX = "[crawlfleet]"
# Events listed in a message; the rest are only counted.
LISTED = 10


@dataclass
class Message:
    subject: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)
    kind: str = ""


def dashboard_links(event: AlertEvent) -> list[str]:
    """The dashboard pages of what ``event`` is about (none without CRAWLFLEET_PUBLIC_URL)."""
    base = (getattr(settings, "CRAWLFLEET_PUBLIC_URL", "") or "").rstrip("/")
    if not base:
        return []
    pages = (
        ("jobs", event.job_id),
        ("runs", event.run_id),
        ("tasks", event.task_id),
        ("nodes", event.node_id),
    )
    return [f"{base}/dashboard/{section}/{pk}/" for section, pk in pages if pk is not None]


def _clock(at: datetime, tz_name: str) -> str:
    local = timezone.localtime(at, zone(tz_name) or zone("UTC"))
    return f"{local:%H:%M} {local.tzname()}"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counter.most_common())


def headline(newest: AlertEvent, total: int, counts: Counter[str], since: datetime, tz: str) -> str:
    """``node-2 is down (and 7 more: 4 node_down, 3 node_back since 12:03 UTC)``."""
    if total <= 1:
        return newest.summary
    others = Counter(counts)
    others[newest.kind] -= 1
    others = +others  # drop zero counts
    return f"{newest.summary} (and {total - 1} more: {_counts(others)} since {_clock(since, tz)})"


def compose(delivery: Delivery) -> Message:
    """The message of ``delivery``, from its events as they are now."""
    events = delivery.events.all()
    newest = list(events.order_by("-created_at", "-id")[:LISTED])
    if not newest:
        return Message(f"{PREFIX} no events", "This delivery has no events left.", {})
    by_kind = events.order_by().values("kind").annotate(n=Count("id")).values_list("kind", "n")
    counts: Counter[str] = Counter(dict(by_kind))
    total = sum(counts.values())
    first = events.order_by("created_at", "id").first() or newest[-1]
    rule = delivery.rule
    tz = rule.quiet_timezone if rule is not None else "UTC"
    head = headline(newest[0], total, counts, first.created_at, tz)
    if delivery.group_key == QUIET_GROUP:
        subject = f"{PREFIX} {total} alert(s) held during quiet hours: {head}"
    else:
        subject = f"{PREFIX} {head}"
    lines = [head, ""]
    if delivery.digest:
        cooldown = rule.cooldown if rule is not None else 0
        lines += [
            f"These repeated within the {cooldown // 60 or cooldown} "
            f"{'min' if cooldown >= 60 else 's'} cooldown after the last alert of this group.",
            "",
        ]
    lines.append("What happened (newest first):")
    for event in newest:
        lines.append(f"- {_clock(event.created_at, tz)}  {event.summary}")
        lines.append(f"  ({KINDS.get(event.kind, event.kind)})")
        lines += [f"  {link}" for link in dashboard_links(event)]
    if total > len(newest):
        lines.append(f"... and {total - len(newest)} earlier event(s): {_counts(counts)}")
    lines += ["", f"Rule: {rule.name if rule else '(deleted)'}; delivery {delivery.uid}"]
    payload = {
        "id": str(delivery.uid),
        "rule": rule.name if rule else None,
        "group": delivery.group_key,
        "digest": delivery.digest,
        "test": delivery.test,
        "subject": one_line(subject),
        "text": "\n".join(lines),
        "event_count": total,
        "counts": dict(counts),
        "first_at": first.created_at.isoformat(),
        "last_at": newest[0].created_at.isoformat(),
        "events": [event_payload(event) for event in newest],
    }
    return Message(one_line(subject), "\n".join(lines), payload, newest[0].kind)


def one_line(text: str, limit: int = 300) -> str:
    """A subject: one line (a mail header must not break), at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_payload(event: AlertEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "summary": event.summary,
        "at": event.created_at.isoformat(),
        "group": event.group_key,
        "project_id": event.project_id,
        "task_id": event.task_id,
        "node_id": event.node_id,
        "job_id": event.job_id,
        "run_id": event.run_id,
        "detail": event.detail,
        "links": dashboard_links(event),
    }


def test_message(channel_name: str, uid: str, now: datetime) -> Message:
    subject = f"{PREFIX} test alert of channel {channel_name}"
    text = (
        f"This is a test alert sent at {now:%Y-%m-%d %H:%M:%S} UTC to check that channel "
        f"{channel_name} reaches you. Nothing is wrong."
    )
    payload = {
        "id": uid,
        "rule": None,
        "group": "test",
        "digest": False,
        "test": True,
        "subject": subject,
        "text": text,
        "event_count": 0,
        "counts": {},
        "first_at": now.isoformat(),
        "last_at": now.isoformat(),
        "events": [],
    }
    return Message(subject, text, payload, "test")
