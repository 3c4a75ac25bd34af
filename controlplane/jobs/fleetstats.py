"""The fleet at a glance: node health and load, jobs now, the last 24 hours, jobs over time.

Each part is one aggregate query, whatever the number of jobs: the counts come from one
``GROUP BY`` over a few yes/no columns and the charts from one over truncated finish times
(``Trunc``, so SQLite and PostgreSQL agree). The active-job figures read an index that starts
with ``state``; the windows over ended jobs name the final states as well as the time, and read
``job_finished_cover_idx`` (``finished_at`` and the columns they sum) without the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import BooleanField, Count, ExpressionWrapper, Q, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.placement import node_loads, placeable_nodes
from controlplane.nodes.models import Node

State = Job.State
FAILED = (State.FAILED, State.LOST, State.TIMED_OUT)
OUTCOMES = (
    State.SUCCEEDED,
    State.DEGRADED,
    State.FAILED,
    State.LOST,
    State.TIMED_OUT,
    State.CANCELLED,
)
# Worst first, so a node that needs attention heads the list.
NODE_ORDER = {Node.State.DOWN: 0, Node.State.DEGRADED: 1, Node.State.UNKNOWN: 2, Node.State.UP: 3}
SPANS = {"24h": ("hour", 24), "7d": ("day", 7)}


@dataclass
class NodeLoad:
    node: Node
    load: int  # jobs dispatching, pending or running on it, from the database

    @property
    def capacity(self) -> int:
        return self.node.capacity

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.load / self.capacity)) if self.capacity else 0


@dataclass
class FleetSummary:
    """The whole fleet in numbers, for the overview and the nodes page alike."""

    states: dict[str, int]  # node state -> how many enabled nodes are in it
    total: int = 0
    disabled: int = 0
    draining: int = 0  # enabled, but taking no new jobs
    load: int = 0  # jobs on the nodes that take new jobs
    capacity: int = 0  # of the nodes that take new jobs
    queued: int = 0

    @property
    def up(self) -> int:
        return self.states.get(Node.State.UP, 0)

    @property
    def degraded(self) -> int:
        return self.states.get(Node.State.DEGRADED, 0)

    @property
    def down(self) -> int:
        """Down, or never seen."""
        return self.states.get(Node.State.DOWN, 0) + self.states.get(Node.State.UNKNOWN, 0)

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.load / self.capacity)) if self.capacity else 0


def fleet_summary() -> FleetSummary:
    """Three aggregate queries, whatever the size of the fleet. Load and capacity count the
    nodes that take new jobs (enabled, not draining, up or degraded), as placement does."""
    result = FleetSummary(states={state: 0 for state in Node.State.values})
    for enabled, draining, state, count in (
        Node.objects.order_by().values_list("enabled", "draining", "state").annotate(n=Count("id"))
    ):
        result.total += count
        if not enabled:
            result.disabled += count
            continue
        result.draining += count if draining else 0
        result.states[state] = result.states.get(state, 0) + count
    placeable = placeable_nodes()
    result.capacity = placeable.aggregate(total=Sum("capacity"))["total"] or 0
    result.load = Job.objects.filter(state__in=Job.ON_NODE, node__in=placeable).count()
    result.queued = Job.objects.filter(state=Job.State.QUEUED).count()
    return result


@dataclass
class FleetHealth:
    """Every node with its load, worst first, and the fleet's numbers."""

    nodes: list[NodeLoad]
    summary: FleetSummary


def fleet_health() -> FleetHealth:
    nodes = list(Node.objects.defer("password").order_by("name"))  # never shown, never loaded
    loads = node_loads(nodes)
    rows = [NodeLoad(node, loads.get(node.pk, 0)) for node in nodes]
    rows.sort(key=lambda row: (NODE_ORDER.get(row.node.state, 9), not row.node.enabled))
    return FleetHealth(nodes=rows, summary=fleet_summary())


def job_figures(now: datetime | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Jobs now and the last 24 hours, in two queries, one per index.

    Now: active jobs by state, queued ones waiting out a retry backoff, active retries.
    Last 24 hours: attempts that ended by outcome, failures, retries (attempt > 1) and their yield.
    Each a GROUP BY over a few yes/no columns, summed up here: a few dozen rows at most, and a
    query far cheaper to build than one conditional aggregate per figure. Not one query with
    ``OR``: the ended jobs' part reads ``job_finished_cover_idx`` alone (an index-only range
    scan), where an ``OR`` of both reads every matching row from the table; nor a ``UNION ALL``,
    which PostgreSQL runs as a parallel append whose workers cost more to start than the scans.
    """
    now = now or timezone.now()

    def flag(where: Q) -> ExpressionWrapper:
        return ExpressionWrapper(where, output_field=BooleanField())

    totals = {k: Sum(k) for k in ("items", "pages", "errors")}
    active = (
        Job.objects.filter(state__in=Job.ACTIVE)
        .annotate(retry=flag(Q(attempt__gt=1)), later=flag(Q(not_before__gt=now)))
        .values("state", "retry", "later")
        .annotate(n=Count("*"), **totals)
        .order_by()
    )
    ended = (
        Job.objects.filter(state__in=Job.FINAL, finished_at__gte=now - timedelta(hours=24))
        .annotate(retry=flag(Q(attempt__gt=1)))
        .values("state", "retry")
        .annotate(n=Count("*"), **totals)
        .order_by()
    )
    rows = [*active, *ended]
    jobs = dict.fromkeys([*Job.ACTIVE, "backoff", "retrying"], 0)
    day = dict.fromkeys(
        [
            "ended",
            *OUTCOMES,
            "failures",
            "retries",
            "retries_succeeded",
            "items",
            "pages",
            "errors",
        ],
        0,
    )
    for row in rows:
        state, n = row["state"], row["n"]
        if state in Job.ACTIVE:
            jobs[state] += n
            jobs["backoff"] += n if state == State.QUEUED and row["later"] else 0
            jobs["retrying"] += n if row["retry"] else 0
            continue
        day["ended"] += n
        day[state] = day.get(state, 0) + n
        day["failures"] += n if state in FAILED else 0
        day["retries"] += n if row["retry"] else 0
        day["retries_succeeded"] += n if row["retry"] and state == State.SUCCEEDED else 0
        for total in totals:
            day[total] += row[total] or 0
    return {str(k): v for k, v in jobs.items()}, {str(k): v for k, v in day.items()}


@dataclass
class Series:
    """Jobs that ended per bucket (hours or days), by outcome, with their items/pages/errors."""

    span: str
    buckets: list[datetime]
    outcomes: dict[str, list[int]] = field(default_factory=dict)
    items: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        fmt = "%H:00" if self.span == "24h" else "%a %d %b"
        return [timezone.localtime(bucket).strftime(fmt) for bucket in self.buckets]


def buckets(span: str, now: datetime | None = None) -> list[datetime]:
    """The bucket starts of ``span``, oldest first, the current (partial) bucket last."""
    kind, count = SPANS[span]
    local = timezone.localtime(now or timezone.now())
    if kind == "hour":
        last = local.replace(minute=0, second=0, microsecond=0)
        step = timedelta(hours=1)
        return [last - step * back for back in range(count - 1, -1, -1)]
    today = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # Days step on the wall clock (a day across a clock change is 23 or 25 hours long).
    return [
        timezone.make_aware(today.replace(tzinfo=None) - timedelta(days=back))
        for back in range(count - 1, -1, -1)
    ]


def series(span: str = "24h", now: datetime | None = None) -> Series:
    """One GROUP BY over (bucket, state) gives both charts."""
    if span not in SPANS:
        raise ValueError(f"unknown span {span!r}; one of {', '.join(SPANS)}")
    starts = buckets(span, now)
    rows = (
        Job.objects.filter(state__in=Job.FINAL, finished_at__gte=starts[0])
        .annotate(bucket=Trunc("finished_at", SPANS[span][0]))
        .values("bucket", "state")
        .annotate(n=Count("*"), items=Sum("items"), pages=Sum("pages"), errors=Sum("errors"))
        .order_by()
    )
    index = {start: position for position, start in enumerate(starts)}
    result = Series(span, starts, {state: [0] * len(starts) for state in OUTCOMES})
    result.items, result.pages, result.errors = ([0] * len(starts) for _ in range(3))
    for row in rows:
        position = index.get(row["bucket"])
        if position is None:  # finished "in the future" on a node with a fast clock
            continue
        if row["state"] in result.outcomes:
            result.outcomes[row["state"]][position] += row["n"]
        result.items[position] += row["items"] or 0
        result.pages[position] += row["pages"] or 0
        result.errors[position] += row["errors"] or 0
    return result
