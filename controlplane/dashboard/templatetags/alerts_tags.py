"""Template helpers of the alerts pages: a delivery's state badge and a channel's target told
without secrets (a webhook by its host only: paths and queries often carry tokens)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template

from controlplane.alerts.models import Channel, DeliveryAttempt
from controlplane.dashboard.templatetags.dashboard import badge
from controlplane.events import KINDS

register = template.Library()

# A delivery's states in the colours the shared badges already have.
BADGE_TONES = {"pending": "pending", "sending": "running", "sent": "succeeded", "failed": "failed"}


@register.simple_tag
def delivery_badge(state: str | None) -> str:
    if not state:
        return ""
    return badge(BADGE_TONES.get(state, "unknown"), state)


@register.filter
def channel_target(channel: Channel) -> str:
    """Where a channel sends, safe to show to every role."""
    if channel.kind == Channel.Kind.WEBHOOK:
        try:
            parts = urlsplit(channel.url)
            host = parts.hostname or "?"
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "(malformed URL)"
        return f"{parts.scheme}://{host}{port}"
    if channel.kind == Channel.Kind.EMAIL:
        return ", ".join(channel.recipients or [])
    if channel.kind == Channel.Kind.APPRISE:
        return ", ".join(channel.apprise_schemes) or "(no URL)"
    return ""


@register.filter
def kind_description(kind: str) -> str:
    return KINDS.get(kind, "an event kind this version does not know")


@register.filter
def took(attempt: DeliveryAttempt) -> str:
    """How long an attempt took: milliseconds below a second."""
    seconds = (attempt.finished_at - attempt.started_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
