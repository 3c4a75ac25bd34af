"""Template helpers of the Runs and Jobs pages: numbers, spans of time, sizes."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def number(value: object) -> str:
    """12345 -> '12,345'; floats keep two decimals; anything else as it is."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)


@register.filter
def span(start: datetime | None, end: datetime | None = None) -> float | None:
    """Seconds from ``start`` to ``end`` (to now while it has not ended); None without a start.

    Use with ``duration``: ``{{ job.started_at|span:job.finished_at|duration }}``.
    """
    if start is None:
        return None
    return max(0.0, ((end or timezone.now()) - start).total_seconds())


@register.filter
def filesize(value: object) -> str:
    """A byte count for people: '1.4 MB'."""
    try:
        size = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover - the loop always returns


@register.filter
def when(value: datetime | None) -> str:
    """An exact time in the control plane's zone, for title attributes and detail tables."""
    if value is None:
        return "-"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
