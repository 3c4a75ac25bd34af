"""What the task pages show besides the task itself: next fires, last runs, success rates, run
history and runs per day. Each is a bounded number of queries whatever the page size (aggregates
and ``IN`` lookups, never one query per row), on the ``(task, -scheduled_for)`` index of runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from controlplane.dashboard import paging
from controlplane.jobs.models import Job
from controlplane.scheduling import cron, upcoming
from controlplane.scheduling.models import Task, TaskRun

# The success rate counts the runs scheduled in this many days, up to now.
SUCCESS_DAYS = 30
PREVIEW_COUNT = 5
State = TaskRun.State
# Stacked bars of the runs-per-day chart, bottom first, with the badge palette's tones.
CHART_OUTCOMES = [
    (State.SUCCEEDED, "#1a7f37"),
    (State.DEGRADED, "#d4a72c"),
    (State.FAILED, "#cf222e"),
    (State.MISSED, "#bf8700"),
    (State.CANCELLED, "#818b98"),
    (State.SKIPPED, "#b7c1cb"),
    (State.ACTIVE, "#0969da"),
]


@dataclass(frozen=True)
class Fire:
    """One coming fire time, on the task's wall clock and in UTC."""

    local: datetime
    utc: datetime


def next_fires(expression: str, zone_name: str, count: int = PREVIEW_COUNT) -> list[Fire]:
    """The next ``count`` fires; ValidationError (cron's readable message) when invalid."""
    trigger = cron.parse(expression, zone_name)
    return [
        Fire(at, at.astimezone(UTC)) for at in cron.next_fire_times(trigger, timezone.now(), count)
    ]


def next_fire(task: Task) -> Fire | None:
    """The task's next fire, or None when it is disabled (or its schedule cannot fire)."""
    at = upcoming.next_fire(task)
    return Fire(at, at.astimezone(UTC)) if at is not None else None


@dataclass
class Rate:
    """Outcomes of the runs scheduled in the last ``SUCCESS_DAYS`` days."""

    succeeded: int = 0
    # Succeeded with a monitor's caveat: counts as a success, shown apart.
    degraded: int = 0
    failed: int = 0
    cancelled: int = 0
    missed: int = 0
    skipped: int = 0
    active: int = 0

    @property
    def ended(self) -> int:
        """Runs that count: they ran to an outcome (succeeded, degraded or failed)."""
        return self.succeeded + self.degraded + self.failed

    @property
    def percent(self) -> int | None:
        return round(100 * (self.succeeded + self.degraded) / self.ended) if self.ended else None

    @property
    def not_counted(self) -> str:
        parts = [(self.missed, "missed"), (self.skipped, "skipped"), (self.cancelled, "cancelled")]
        parts.append((self.active, "still active"))
        return ", ".join(f"{n} {label}" for n, label in parts if n) or "none"

    @property
    def tone(self) -> str:
        percent = self.percent
        if percent is None:
            return "info"
        return "ok" if percent >= 95 else "warn" if percent >= 80 else "bad"


def success_rates(task_ids: Iterable[int]) -> dict[int, Rate]:
    """One grouped query for every task on a page."""
    since = timezone.now() - timedelta(days=SUCCESS_DAYS)
    counts = {state: Count("pk", filter=Q(state=state)) for state in State.values}
    rows = (
        TaskRun.objects.filter(task_id__in=list(task_ids), scheduled_for__gte=since)
        .values("task_id")
        .annotate(**counts)
    )
    return {row.pop("task_id"): Rate(**row) for row in rows}


@dataclass
class TaskRow:
    task: Task
    next_fire: Fire | None
    last_run: TaskRun | None
    rate: Rate = field(default_factory=Rate)


def task_rows(tasks: list[Task]) -> list[TaskRow]:
    """The list page's rows: three queries for the page (tasks, last runs, rates)."""
    last_ids = [t.last_run_id for t in tasks if getattr(t, "last_run_id", None)]
    last_runs = TaskRun.objects.in_bulk(last_ids)
    rates = success_rates(t.pk for t in tasks)
    return [
        TaskRow(
            task=t,
            next_fire=next_fire(t),
            last_run=last_runs.get(getattr(t, "last_run_id", None)),
            rate=rates.get(t.pk, Rate()),
        )
        for t in tasks
    ]


def with_last_run(tasks: QuerySet[Task]) -> QuerySet[Task]:
    """Annotate each task with its newest run's id (one index seek per task)."""
    newest = TaskRun.objects.filter(task=OuterRef("pk")).order_by("-scheduled_for", "-pk")
    return tasks.annotate(last_run_id=Subquery(newest.values("pk")[:1]))


@dataclass
class RunRow:
    """A run with its jobs summed: every attempt and shard."""

    run: TaskRun
    jobs: int = 0
    items: int = 0
    pages: int = 0
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def duration(self) -> timedelta | None:
        """From the first job's start to the run's end (or now, while it runs)."""
        if self.started is None:
            return None
        end = self.run.finished_at or self.ended
        if self.run.state == State.ACTIVE:
            end = timezone.now()
        return (end - self.started) if end else None


def run_history(
    task: Task, cursor: str | None, size: int = paging.DEFAULT_PAGE_SIZE
) -> paging.Page:
    """A keyset page of the task's runs, newest first, each with its jobs' sums (2 queries)."""
    page = paging.page(TaskRun.objects.filter(task=task), "scheduled_for", cursor, size)
    sums = (
        Job.objects.filter(run_id__in=[r.pk for r in page.rows])
        .values("run_id")
        .annotate(
            jobs=Count("pk"),
            items=Sum("items"),
            pages=Sum("pages"),
            started=Min("started_at"),
            ended=Max("finished_at"),
        )
    )
    by_run = {row.pop("run_id"): row for row in sums}
    page.rows = [RunRow(run, **by_run.get(run.pk, {})) for run in page.rows]
    return page


def task_zone(task: Task) -> ZoneInfo:
    try:
        return cron.zone(task.timezone)
    except ValidationError:
        return ZoneInfo("UTC")


def runs_per_day(task: Task, days: int = SUCCESS_DAYS) -> dict[str, object]:
    """Chart.js spec: runs per day (the task's calendar days) stacked by outcome."""
    zone = task_zone(task)
    today = timezone.now().astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=zone)
    rows = (
        TaskRun.objects.filter(task=task, scheduled_for__gte=start)
        .annotate(day=TruncDate("scheduled_for", tzinfo=zone))
        .values("day", "state")
        .annotate(n=Count("pk"))
    )
    counts: dict[tuple[date, str], int] = {(r["day"], r["state"]): r["n"] for r in rows}
    day_list = [first + timedelta(days=i) for i in range(days)]
    present = {state for _, state in counts}
    datasets = [
        {
            "label": State(state).label.split(" (")[0],
            "data": [counts.get((day, state), 0) for day in day_list],
            "backgroundColor": colour,
            "stack": "runs",
        }
        for state, colour in CHART_OUTCOMES
        if state in present or state in (State.SUCCEEDED, State.FAILED)
    ]
    return {
        "type": "bar",
        "labels": [day.strftime("%b %d") for day in day_list],
        "datasets": datasets,
        "options": {
            "scales": {
                "x": {"stacked": True},
                "y": {"stacked": True, "beginAtZero": True, "ticks": {"precision": 0}},
            },
        },
    }


def chart_json(task: Task) -> str:
    return json.dumps(runs_per_day(task))
