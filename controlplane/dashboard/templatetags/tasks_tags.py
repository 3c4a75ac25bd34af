"""Template filters of the task pages: times on a task's own clock and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from controlplane.scheduling import cron

register = template.Library()


def _clock(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")


@register.filter
def fire_local(value: datetime | None) -> str:
    """'Mon 2026-12-07 03:00 CET': the weekday and the zone's abbreviation, as cron sees it."""
    if value is None:
        return "-"
    return f"{value:%a} {_clock(value)} {value.tzname() or ''}".strip()


@register.filter
def fire_utc(value: datetime | None) -> str:
    if value is None:
        return "-"
    return f"{_clock(value.astimezone(UTC))} UTC"


@register.filter
def in_zone(value: datetime | None, zone_name: str) -> datetime | None:
    """``value`` on the clock of ``zone_name`` (UTC when the name is not a zone)."""
    if value is None:
        return None
    try:
        return value.astimezone(cron.zone(zone_name))
    except ValidationError:
        return value.astimezone(UTC)


@register.simple_tag
def run_badge(state: str) -> str:
    """A run's state badge; an active run is coloured like a running job."""
    css = "running" if state == "active" else state
    return format_html('<span class="badge state-{}">{}</span>', css, state)


@register.filter
def number(value: float | int | None) -> str:
    """30.0 as '30', 1.5 as '1.5'."""
    return "-" if value is None else f"{value:g}"
