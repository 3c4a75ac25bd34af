"""Cron expressions: parsing, validation with readable errors, and next-run previews.

Five fields are standard crontab (minute hour day month weekday, Sunday = 0 or 7); six fields put
seconds first. ``@hourly``-style macros work. APScheduler's CronTrigger does the date arithmetic,
including daylight-saving gaps in the task's own timezone. Weekday numbers are translated to names
because APScheduler counts Monday as 0, unlike crontab.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from django.core.exceptions import ValidationError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
FIELD_NAMES = ["second", "minute", "hour", "day", "month", "day_of_week"]
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICRO = timedelta(microseconds=1)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(
            f"unknown timezone {name!r} (use an IANA name such as Europe/Paris)"
        ) from None


def _weekday_token(token: str) -> str:
    """Translate one crontab weekday token (``1``, ``1-5``, ``*/2``, ``5-7``) to names."""
    step = ""
    if "/" in token:
        token, step = token.split("/", 1)
        step = "/" + step
    if token == "*":
        return token + step
    bounds = token.split("-")
    if not all(b.isdigit() for b in bounds):
        return token + step  # names like mon-fri pass through
    numbers = [int(b) for b in bounds]
    if any(n > 7 for n in numbers):
        raise ValidationError(f"weekday {token!r} is out of range (0-7, Sunday is 0 or 7)")
    if len(numbers) == 2 and numbers[1] == 7 and numbers[0] != 7:
        start = WEEKDAYS[numbers[0] % 7]
        return (
            (f"{start}-sat,sun" if numbers[0] != 0 else "*") if not step else f"{start}-sat{step}"
        )
    return "-".join(WEEKDAYS[n % 7] for n in numbers) + step


def parse(expression: str, timezone: str = "UTC") -> CronTrigger:
    """A CronTrigger for ``expression`` in ``timezone``; ValidationError names what is wrong."""
    text = (expression or "").strip()
    text = MACROS.get(text.lower(), text)
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ValidationError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month weekday) or 6 (second first)"
        )
    if len(fields) == 5:
        fields = ["0", *fields]
    if any(not re.match(r"^[\w*/,\-?]+$", f) for f in fields):
        raise ValidationError(f"cron expression {expression!r} contains invalid characters")
    fields[5] = ",".join(_weekday_token(t) for t in fields[5].split(","))
    values = dict(zip(FIELD_NAMES, fields, strict=True))
    for key in ("day", "day_of_week"):
        if values[key] == "?":
            values[key] = "*"
    tz = zone(timezone)
    try:
        return CronTrigger(**values, timezone=tz)
    except ValueError as exc:
        raise ValidationError(f"cron expression {expression!r}: {exc}") from None


def next_fire_times(trigger: CronTrigger, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``."""
    times: list[datetime] = []
    previous = None
    now = after
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        if fire <= after:
            now = fire.replace(microsecond=0) + _ONE_SECOND
            continue
        times.append(fire)
        previous = fire
        now = fire + _ONE_SECOND
    return times


def fire_times_between(
    trigger: CronTrigger, start: datetime, end: datetime, limit: int = 1000
) -> list[datetime]:
    """Fire times in the half-open window (start, end], oldest first, at most ``limit``."""
    times: list[datetime] = []
    now = start + _ONE_MICRO
    previous = None
    while len(times) < limit:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None or fire > end:
            break
        if fire > start:
            times.append(fire)
        previous = fire
        now = fire + _ONE_SECOND
    return times
