"""Quiet hours: a daily local period during which a rule's alerts are held, then sent grouped.

Pure functions of the rule's period and the clock, so tests pass ``now`` instead of sleeping.
A period may wrap midnight (22:00-07:00); its times are wall-clock times in the rule's timezone,
so it follows daylight saving time.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo | None:
    """The timezone called ``name``, or None when there is none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def quiet_until(
    start: time | None, end: time | None, tz_name: str, now: datetime
) -> datetime | None:
    """When the quiet period that contains ``now`` ends, or None when ``now`` is not quiet."""
    if start is None or end is None or start == end:
        return None
    tz = zone(tz_name) or ZoneInfo("UTC")
    local = now.astimezone(tz)
    at = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if start <= at < end:
            return datetime.combine(today, end, tzinfo=tz)
        return None
    if at >= start:  # wraps midnight: ends tomorrow
        return datetime.combine(today + timedelta(days=1), end, tzinfo=tz)
    if at < end:
        return datetime.combine(today, end, tzinfo=tz)
    return None


def rule_quiet_until(rule: object, now: datetime) -> datetime | None:
    """:func:`quiet_until` of an :class:`~controlplane.alerts.models.AlertRule`."""
    return quiet_until(
        getattr(rule, "quiet_start", None),
        getattr(rule, "quiet_end", None),
        getattr(rule, "quiet_timezone", "UTC") or "UTC",
        now,
    )
