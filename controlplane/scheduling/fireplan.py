"""Which fires of a task to run and which to record as missed, and what the scheduler tracks of
each task between reloads of the task table. Pure functions of the task and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controlplane.scheduling import cron

# After an outage, at most this many late fires (within misfire_grace) of a task run.
MAX_LATE_RUNS = 3
# Fires recorded ahead in one go at most: a lead of up to 30 s of a per-second task.
MAX_AHEAD = 64
# At most this many fires a task missed are recorded; older ones are only counted in the log.
MAX_MISSED_RECORDS = 100

ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass
class FirePlan:
    """What to do with one task's fires in a window: run some, record some as missed."""

    fires: list[tuple[datetime, str]]  # (fire time, missed reason or "" to run it)
    newest: datetime | None  # the new bookmark

    @property
    def to_run(self) -> list[datetime]:
        return [at for at, reason in self.fires if not reason]

    @property
    def missed(self) -> list[datetime]:
        return [at for at, reason in self.fires if reason]


def plan_fires(
    trigger: cron.WallClockCronTrigger,
    start: datetime,
    now: datetime,
    grace_seconds: float,
    times: list[datetime] | None = None,
    horizon: datetime | None = None,
) -> FirePlan:
    """Fires in (start, horizon]: the newest few of those up to ``now`` within the grace run,
    the rest of those are missed, and every fire after ``now`` (recorded ahead) runs.

    ``horizon`` defaults to ``now``; ``times``: those fires, when the caller already knows them.
    """
    horizon = now if horizon is None else max(now, horizon)
    if times is None:
        times = cron.newest_fire_times(trigger, start, now, MAX_LATE_RUNS + MAX_MISSED_RECORDS)
        times += cron.newest_fire_times(trigger, max(start, now), horizon, MAX_AHEAD)
    if not times:
        return FirePlan([], None)
    cutoff = now - timedelta(seconds=grace_seconds)
    late = [t for t in times if cutoff < t <= now]
    run = set(late[-MAX_LATE_RUNS:]) | {t for t in times if t > now}
    fires = []
    for at in times:
        if at in run:
            fires.append((at, ""))
        elif at > cutoff:
            fires.append(
                (at, f"superseded: after an outage only the newest {MAX_LATE_RUNS} late fires run")
            )
        else:
            late_by = (now - at).total_seconds()
            fires.append(
                (
                    at,
                    f"the scheduler saw this fire {late_by:.0f}s late, more than the "
                    f"misfire grace of {grace_seconds:g}s",
                )
            )
    return FirePlan(fires, times[-1])


@dataclass
class TaskSchedule:
    """What the scheduler knows of one task between syncs."""

    task_id: int
    name: str
    cron: str
    timezone: str
    enabled: bool
    updated_at: datetime
    created_at: datetime
    fired_through: datetime | None
    trigger: cron.WallClockCronTrigger | None
    # Fires at or before this were not due (the task was disabled or had another schedule).
    floor: datetime | None = None
    next_fire: datetime | None = None
    next_fire_after: datetime | None = None  # the start next_fire was computed from

    def start(self, fired_through: datetime | None = None) -> datetime:
        start = fired_through or self.fired_through or self.created_at
        if self.floor is not None and self.floor > start:
            start = self.floor
        return start

    def refresh_next_fire(self) -> None:
        if not self.enabled or self.trigger is None:
            self.next_fire = self.next_fire_after = None
            return
        start = self.start()
        if start == self.next_fire_after:
            return
        self.next_fire = self.trigger.next_at_or_after(start.astimezone(UTC) + ONE_MICROSECOND)
        self.next_fire_after = start

    def schedule_changed(self, other: TaskSchedule) -> bool:
        return (self.cron, self.timezone, self.enabled) != (
            other.cron,
            other.timezone,
            other.enabled,
        )
