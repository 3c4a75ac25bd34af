"""The next fires across every enabled task, for pages polled every few seconds.

A task's next fire only changes when it passes or when the task's cron or timezone changes, so
each one is remembered (per process) until then: a poll costs one query over the tasks and a
cron computation only for the tasks that fired since the last poll.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane.scheduling.models import Task

_lock = threading.Lock()
# task id -> (cron, timezone, next fire); replaced whole on each call, so deleted tasks drop out
_remembered: dict[int, tuple[str, str, datetime]] = {}


@dataclass(frozen=True)
class Fire:
    task: Task
    at: datetime  # in the task's timezone

    @property
    def utc(self) -> datetime:
        return self.at.astimezone(UTC)


def _next_fire(
    task: Task, now: datetime, known: dict[int, tuple[str, str, datetime]]
) -> datetime | None:
    cached = known.get(task.pk)
    if cached and cached[:2] == (task.cron, task.timezone) and cached[2].astimezone(UTC) > now:
        return cached[2]
    try:
        upcoming = task.next_runs(1, after=now)
    except ValidationError:  # saved before a rule tightened; the tasks page shows why
        return None
    return upcoming[0] if upcoming else None


def next_fire(task: Task, now: datetime | None = None) -> datetime | None:
    """One task's next fire, in its timezone; None if disabled or its schedule cannot fire."""
    if not task.enabled:
        return None
    now = now or timezone.now()
    with _lock:
        known = dict(_remembered)
    at = _next_fire(task, now, known)
    if at is not None:
        with _lock:
            _remembered[task.pk] = (task.cron, task.timezone, at)
    return at


def next_fires(limit: int = 5, now: datetime | None = None) -> list[Fire]:
    """The ``limit`` enabled tasks that fire soonest, soonest first."""
    now = now or timezone.now()
    tasks = Task.objects.filter(enabled=True).select_related("project")
    with _lock:
        known = dict(_remembered)
    fires: list[Fire] = []
    fresh: dict[int, tuple[str, str, datetime]] = {}
    for task in tasks:
        at = _next_fire(task, now, known)
        if at is not None:
            fresh[task.pk] = (task.cron, task.timezone, at)
            fires.append(Fire(task, at))
    with _lock:
        _remembered.clear()
        _remembered.update(fresh)
    return heapq.nsmallest(limit, fires, key=lambda fire: (fire.utc, fire.task.name))
