"""Cron expressions: parsing, validation with readable errors, and next-run previews.

Five fields are standard crontab (minute hour day month weekday, Sunday = 0 or 7); six fields put
seconds first. ``@hourly``-style macros work. Weekday numbers follow crontab, not APScheduler
(which counts Monday as 0), and when both day-of-month and weekday are restricted a day matching
either runs, as in crontab.

Fire times are computed on the task's wall clock, in its own timezone. APScheduler's CronTrigger
does the calendar arithmetic, but only on a clock without daylight saving (a naive wall clock
handled as UTC): around a fall-back it can return the same instant again or an earlier one, which
would hang its own scheduler loop. Clock changes are handled here, the way cron does:

* spring forward: wall times skipped by the change do not exist; a task with a fixed hour runs
  once right after the change, a task whose hour field starts with ``*`` just skips them;
* fall back: a repeated wall time runs only the first time for a task with a fixed hour; a task
  whose hour field starts with ``*`` runs at both.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
FIELD_LABELS = {
    "second": "second (0-59)",
    "minute": "minute (0-59)",
    "hour": "hour (0-23)",
    "day": "day of month (1-31)",
    "month": "month (1-12 or jan-dec)",
    "day_of_week": "weekday (0-7 or sun-sat, Sunday is 0 or 7)",
}
_FIELD_RE = re.compile(r"^[A-Za-z0-9*/,\-?]+$")
_WEEKDAY_ATOM_RE = re.compile(r"^(\*|[0-9]+|[a-z]{3})(?:-([0-9]+|[a-z]{3}))?(?:/([0-9]+))?$")
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICRO = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
# Bounds on the work of one lookup, so no expression can stall the scheduler.
_MAX_CLOCK_CHANGES = 400
_MAX_SCAN = 20_000


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(
            f"unknown timezone {name!r} (use an IANA name such as Europe/Paris)"
        ) from None


def _weekday_number(token: str, expression: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValidationError(
                f"cron expression {expression!r}: weekday {token} is out of range "
                "(0-7, Sunday is 0 or 7)"
            )
        return number
    if token not in WEEKDAYS:
        raise ValidationError(
            f"cron expression {expression!r}: unknown weekday {token!r} "
            f"(use 0-7 or {', '.join(WEEKDAYS)})"
        )
    return WEEKDAYS.index(token)


def _weekday_names(field: str, expression: str) -> str:
    """Translate a crontab weekday field (``1-5``, ``*/2``, ``sat,sun``) to APScheduler names.

    Steps and ranges are expanded to an explicit list because APScheduler would apply them to
    its own Monday-first numbering.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for atom in field.lower().split(","):
        match = _WEEKDAY_ATOM_RE.match(atom)
        if not match:
            raise ValidationError(
                f"cron expression {expression!r}: weekday {atom!r} is not a day, range or step"
            )
        start_token, end_token, step_token = match.groups()
        step = int(step_token) if step_token else 1
        if step < 1:
            raise ValidationError(f"cron expression {expression!r}: weekday step must be >= 1")
        if start_token == "*":
            if end_token:
                raise ValidationError(f"cron expression {expression!r}: bad weekday {atom!r}")
            start, end = 0, 6
        else:
            start = _weekday_number(start_token, expression)
            if end_token:
                end = _weekday_number(end_token, expression)
                if end_token == "sun" and end < start:
                    end = 7  # "sat-sun"
            elif step_token:
                end = max(6, start)  # crontab: "1/2" runs from Monday to the end of the week
            else:
                end = start
            if end < start:
                raise ValidationError(
                    f"cron expression {expression!r}: weekday range {atom!r} runs backwards"
                )
        days.update(day % 7 for day in range(start, end + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(WEEKDAYS[day] for day in sorted(days))


def _restricted(field: str) -> bool:
    return not field.startswith(("*", "?"))


def _build(values: dict[str, str], expression: str) -> CronTrigger:
    """A CronTrigger on a naive wall clock (UTC); errors name the offending field."""
    try:
        return CronTrigger(**values, timezone=UTC)
    except ValueError as exc:
        for name, value in values.items():
            try:
                CronTrigger(**{name: value}, timezone=UTC)
            except ValueError as field_exc:
                detail = re.sub(r"^Error validating expression '[^']*': ", "", str(field_exc))
                raise ValidationError(
                    f"cron expression {expression!r}: {FIELD_LABELS[name]} field {value!r}: "
                    f"{detail}"
                ) from None
        raise ValidationError(f"cron expression {expression!r}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _clock_changes(tz: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """The instants (UTC) in ``year`` at which ``tz``'s UTC offset changes, computed once."""

    def offset(instant: datetime) -> timedelta | None:
        return instant.astimezone(tz).utcoffset()

    changes = []
    low = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    current = offset(low)
    while low < end:
        high = min(low + _ONE_DAY, end)
        if offset(high) != current:
            # Offsets change on whole seconds: bisect integer timestamps.
            lo_ts, hi_ts = int(low.timestamp()), int(high.timestamp())
            while hi_ts - lo_ts > 1:
                middle = (lo_ts + hi_ts) // 2
                if offset(datetime.fromtimestamp(middle, UTC)) == current:
                    lo_ts = middle
                else:
                    hi_ts = middle
            changes.append(datetime.fromtimestamp(hi_ts, UTC))
            current = offset(high)
        low = high
    return tuple(changes)


class WallClockCronTrigger(CronTrigger):
    """A CronTrigger whose fire times are always strictly increasing, also across clock changes.

    Used for the scheduler's jobs and for every fire-time computation, so previews, the
    scheduler's wake-ups and the exactly-once bookkeeping all agree.
    """

    def __init__(
        self, expression: str, fields: dict[str, str], timezone: ZoneInfo, *, day_or: bool
    ) -> None:
        super().__init__(**fields, timezone=timezone)
        self.expression = expression
        self.hour_wildcard = not _restricted(fields["hour"])
        if day_or:
            self._wall = [
                _build({**fields, "day_of_week": "*"}, expression),
                _build({**fields, "day": "*"}, expression),
            ]
        else:
            self._wall = [_build(fields, expression)]

    def __str__(self) -> str:
        return f"cron[{self.expression!r} {self.timezone}]"

    def __repr__(self) -> str:
        return f"<WallClockCronTrigger {self.expression!r} timezone={self.timezone}>"

    # --- wall clock ----------------------------------------------------------------------
    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching naive wall time at or after ``wall`` (rounded up to a second)."""
        probe = wall.replace(tzinfo=UTC)
        candidates = [t.get_next_fire_time(None, probe) for t in self._wall]
        found = [c for c in candidates if c is not None]
        return min(found).replace(tzinfo=None) if found else None

    def _offset(self, instant: datetime) -> timedelta:
        return instant.astimezone(self.timezone).utcoffset() or timedelta(0)

    def _clock_change(self, start: datetime, end: datetime) -> datetime | None:
        """The first instant in (start, end] at which the zone's UTC offset changes."""
        for year in range(start.year, end.year + 1):
            for change in _clock_changes(self.timezone, year):
                if start < change <= end:
                    return change
                if change > end:
                    return None
        return None

    def _second_occurrence(self, instant: datetime) -> bool:
        """Is this the second time its wall time happens (the repeated hour of a fall-back)?"""
        local = instant.astimezone(self.timezone)
        return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()

    def next_at_or_after(self, instant: datetime) -> datetime | None:
        """The first fire time at or after ``instant``, in the task's timezone."""
        cursor = instant.astimezone(UTC)
        for _ in range(_MAX_CLOCK_CHANGES):
            offset = self._offset(cursor)
            wall = self._next_wall((cursor + offset).replace(tzinfo=None))
            if wall is None:
                return None
            candidate = (wall - offset).replace(tzinfo=UTC)
            change = self._clock_change(cursor, candidate)
            if change is None:
                if self._second_occurrence(candidate) and not self.hour_wildcard:
                    # Skip the rest of the repeated hour in one step: it ends one offset
                    # difference after the clock went back.
                    local = candidate.astimezone(self.timezone)
                    difference = (local.replace(fold=0).utcoffset() or timedelta(0)) - (
                        local.utcoffset() or timedelta(0)
                    )
                    went_back = self._clock_change(candidate - difference, candidate)
                    cursor = (went_back or candidate) + difference
                    continue
                return candidate.astimezone(self.timezone)
            new_offset = self._offset(change)
            if new_offset > offset and not self.hour_wildcard:
                gap_start = (change + offset).replace(tzinfo=None)
                skipped = self._next_wall(gap_start)
                if skipped is not None and skipped < (change + new_offset).replace(tzinfo=None):
                    return change.astimezone(self.timezone)  # run once, right after the change
            cursor = change
        return None

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Arithmetic on aware datetimes is wall-clock arithmetic, and two datetimes in the same
        # zone compare by wall clock (fold ignored): work in UTC.
        start = now.astimezone(UTC)
        if previous_fire_time is not None:
            after_previous = previous_fire_time.astimezone(UTC) + _ONE_MICRO
            start = min(start, after_previous)
            if start < after_previous:
                start = after_previous
        return self.next_at_or_after(start)


def parse(expression: str, timezone: str = "UTC") -> WallClockCronTrigger:
    """A trigger for ``expression`` in ``timezone``; ValidationError says what is wrong.

    Triggers hold no state, so one is shared by every task with the same schedule.
    """
    return _parse(expression, timezone)


@functools.lru_cache(maxsize=4096)
def _parse(expression: str, timezone: str) -> WallClockCronTrigger:
    text = (expression or "").strip()
    macro = MACROS.get(text.lower())
    if text.startswith("@") and macro is None:
        raise ValidationError(
            f"unknown cron macro {text!r}; known: {', '.join(sorted(set(MACROS)))}"
        )
    fields = (macro or text).split()
    if len(fields) not in (5, 6):
        raise ValidationError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month weekday) or 6 (second minute hour day month weekday)"
        )
    if len(fields) == 5:
        fields = ["0", *fields]
    for name, value in zip(FIELD_NAMES, fields, strict=True):
        if not _FIELD_RE.match(value):
            raise ValidationError(
                f"cron expression {expression!r}: {FIELD_LABELS[name]} field {value!r} "
                "contains invalid characters"
            )
    values = dict(zip(FIELD_NAMES, fields, strict=True))
    day_or = _restricted(values["day"]) and _restricted(values["day_of_week"])
    if values["day"] == "?":
        values["day"] = "*"
    _build({**values, "day_of_week": "*"}, expression)  # fields in order, weekday last
    values["day_of_week"] = _weekday_names(values["day_of_week"], expression)
    tz = zone(timezone)
    trigger = WallClockCronTrigger(text, values, tz, day_or=day_or)
    if trigger._next_wall(datetime(2000, 1, 1)) is None:
        raise ValidationError(f"cron expression {expression!r} never fires (no such date)")
    return trigger


def iter_fire_times(trigger: CronTrigger, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after``, oldest first, without end.

    Times are in the trigger's timezone; compare them in UTC (two datetimes of one zone compare
    by wall clock, which repeats in a fall-back).
    """
    previous: datetime | None = None
    after_utc = after.astimezone(UTC)
    now = after_utc + _ONE_MICRO
    while True:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            return
        fire_utc = fire.astimezone(UTC)
        if fire_utc > after_utc and (previous is None or fire_utc > previous.astimezone(UTC)):
            yield fire
            previous = fire
        now = fire_utc + _ONE_MICRO


def next_fire_times(trigger: CronTrigger, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``."""
    times: list[datetime] = []
    for fire in iter_fire_times(trigger, after):
        if len(times) >= count:
            break
        times.append(fire)
    return times


def fire_times_between(
    trigger: CronTrigger, start: datetime, end: datetime, limit: int = 1000
) -> list[datetime]:
    """Fire times in the half-open window (start, end], oldest first, at most ``limit``."""
    times: list[datetime] = []
    end = end.astimezone(UTC)
    for fire in iter_fire_times(trigger, start):
        if fire.astimezone(UTC) > end or len(times) >= limit:
            break
        times.append(fire)
    return times


def newest_fire_times(
    trigger: CronTrigger, start: datetime, end: datetime, count: int
) -> list[datetime]:
    """The newest ``count`` fire times in (start, end], oldest first.

    After a long outage the window may hold millions of fires (a per-second task down for a
    week); this looks back from ``end`` in growing steps instead of walking from ``start``.
    """
    if count <= 0 or end <= start:
        return []
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    span = timedelta(minutes=1)
    while True:
        low = max(start, end - span)
        newest: deque[datetime] = deque(maxlen=count)
        scanned = 0
        for fire in iter_fire_times(trigger, low):
            if fire.astimezone(UTC) > end:
                break
            newest.append(fire)
            scanned += 1
            if scanned >= _MAX_SCAN:
                break
        if len(newest) >= count or low == start or scanned >= _MAX_SCAN:
            return list(newest)
        span *= 8
