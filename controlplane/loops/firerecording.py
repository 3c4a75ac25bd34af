"""Recording due fires: the scheduler's one write per chunk of a burst (see loops.scheduler)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import transaction

from controlplane.jobs import placement
from controlplane.jobs.runs import Fire, record_fires
from controlplane.scheduling.fireplan import ONE_MICROSECOND, FirePlan, TaskSchedule, plan_fires
from controlplane.scheduling.missed import report_missed
from controlplane.scheduling.models import Task, TaskRun

# The longest a fire is recorded ahead of its time (CRAWLFLEET_FIRE_LEAD's own bound).
MAX_LEAD = 30.0
# Recording time per fire assumed before a burst has been measured, and the margin over what the
# measure says (a loaded machine records slower than the last burst did).
FIRST_SECONDS_PER_FIRE = 0.002
LEAD_MARGIN = 1.5


def lead_for(upcoming: Iterable[float], seconds_per_fire: float, configured: float) -> float:
    """How far ahead of the next fire to start recording, so that every upcoming fire is recorded
    before its time.

    ``upcoming``: seconds from now to each task's next fire. Recorded one after another, the
    k-th fire (from 1, in time order) is done k x ``seconds_per_fire`` after the start, which must
    not be later than its own time; the start this needs, counted back from the first fire, is
    the lead. Never less than ``configured``, never more than :data:`MAX_LEAD`, and 0 when
    ``configured`` is 0 (fires recorded once due, by choice)."""
    if configured <= 0:
        return 0.0
    times = sorted(upcoming)
    if not times:
        return configured
    cost = seconds_per_fire * LEAD_MARGIN
    first = times[0]
    needed = max((k * cost) - (at - first) for k, at in enumerate(times, start=1))
    return min(MAX_LEAD, max(configured, needed))


def later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two bookmarks, either of which may be unset."""
    if a is None or b is None:
        return a or b
    return max(a, b)


def record_chunk(
    schedules: dict[int, TaskSchedule],
    task_ids: list[int],
    now: datetime,
    next_fires: dict[tuple[str, str, datetime], datetime | None],
    horizon: datetime | None = None,
) -> tuple[list[TaskRun], list[FirePlan]]:
    """Record one chunk of due tasks' fires in one transaction and move their bookmarks.

    Fires up to ``horizon`` (``now`` by default) are recorded: those after ``now`` ahead of
    time, their jobs held until the fire (``Job.not_before``), so they reach their nodes on time.

    A racing replica's insert of the same fire fails on the unique (task, scheduled_for)
    constraint, and a bookmark moves only from the value read (``WHERE fired_through = old``),
    so two replicas recording the same chunk record each fire once. ``schedules`` is updated
    only after the commit: after a failed transaction the same fires are tried again.
    """
    plans: list[FirePlan] = []
    advances: dict[tuple[datetime | None, datetime], list[int]] = defaultdict(list)
    handled: list[tuple[TaskSchedule, datetime, datetime | None]] = []
    horizon = now if horizon is None else max(now, horizon)
    with placement.WRITE_LOCK, transaction.atomic():
        tasks = (
            Task.objects.filter(pk__in=task_ids, enabled=True)
            .select_related("project__current_version", "version")
            .defer("project__current_version__egg", "version__egg")
            .order_by("pk")
        )
        fires: list[Fire] = []
        for task in tasks:
            schedule = schedules[task.pk]
            schedule.fired_through = later(schedule.fired_through, task.fired_through)
            trigger = schedule.trigger
            if (task.cron, task.timezone) != (schedule.cron, schedule.timezone):
                continue  # changed since the last sync, which will pick it up
            if trigger is None:
                continue
            start = schedule.start(task.fired_through)
            known, following = None, None
            if start == schedule.next_fire_after and schedule.next_fire is not None:
                # The usual wake-up: one fire, already known; is there a second one due?
                key = (schedule.cron, schedule.timezone, schedule.next_fire)
                if key not in next_fires:
                    next_fires[key] = trigger.next_at_or_after(
                        schedule.next_fire.astimezone(UTC) + ONE_MICROSECOND
                    )
                following = next_fires[key]
                if following is None or following > horizon:
                    known = [schedule.next_fire] if schedule.next_fire <= horizon else []
            plan = plan_fires(trigger, start, now, task.misfire_grace, times=known, horizon=horizon)
            if plan.newest is None:
                continue
            plans.append(plan)
            fires += [Fire(task, at, reason) for at, reason in plan.fires]
            advances[(task.fired_through, plan.newest)].append(task.pk)
            handled.append((schedule, plan.newest, following if known is not None else None))
        created = record_fires(fires, now)
        report_missed(created)
        for (old, new), ids in advances.items():
            bookmark = Task.objects.filter(pk__in=ids)
            bookmark = (
                bookmark.filter(fired_through__isnull=True)
                if old is None
                else bookmark.filter(fired_through=old)
            )
            bookmark.update(fired_through=new)
    # Only once committed: after a failed transaction the same fires are tried again.
    for schedule, newest, following in handled:
        schedule.fired_through = newest
        if following is not None:
            schedule.next_fire, schedule.next_fire_after = following, newest
    return created, plans
