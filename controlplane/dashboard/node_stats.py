"""What the nodes pages show, read in a fixed number of queries however large the fleet.

Load is counted from the database (jobs dispatching, pending or running on each node), as
placement counts it; the node's own counters from its last ``daemonstatus.json`` are shown beside.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Avg, BooleanField, Case, Count, Q, QuerySet, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.deploys.models import NodeDeployment, Project
from controlplane.jobs.models import Job
from controlplane.loops.shards import live_replicas
from controlplane.nodes.models import HealthSample, Node

# Span of the health chart: label -> how far back.
SPANS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
DEFAULT_SPAN = "24h"
# More samples than this are averaged into this many buckets, so a week still draws quickly.
MAX_POINTS = 360
RECENT_JOBS = 20
STATE_CHANGES = 30


@dataclass
class DeployedVersion:
    project: str
    version: str
    current: bool

    def __str__(self) -> str:
        return f"{self.project} {self.version}"


@dataclass
class NodeRow:
    """One node with its load from the database and the versions it holds."""

    node: Node
    running: int = 0
    pending: int = 0  # dispatching or waiting in the node's queue
    versions: list[DeployedVersion] = field(default_factory=list)
    missing_current: list[str] = field(default_factory=list)

    @property
    def load(self) -> int:
        return self.running + self.pending

    @property
    def load_percent(self) -> int:
        return min(100, round(100 * self.load / self.node.capacity)) if self.node.capacity else 0


def nodes_for_pages() -> QuerySet[Node]:
    """Nodes without their password: pages never need it, so it is never even loaded; only
    whether one is set (``has_password``)."""
    has_password = Case(When(password="", then=False), default=True, output_field=BooleanField())
    return Node.objects.defer("password").annotate(has_password=has_password).order_by("name")


def fleet_rows(nodes: list[Node]) -> list[NodeRow]:
    """Rows for ``nodes``: three queries for any number of nodes."""
    rows = {node.pk: NodeRow(node) for node in nodes}
    counts = (
        Job.objects.filter(state__in=Job.ON_NODE, node__in=list(rows))
        .order_by()
        .values_list("node", "state")
        .annotate(count=Count("id"))
    )
    for node_id, state, count in counts:
        if state == Job.State.RUNNING:
            rows[node_id].running += count
        else:
            rows[node_id].pending += count
    current = {
        version_id: f"{name} {version}"
        for version_id, name, version in Project.objects.filter(
            current_version__isnull=False
        ).values_list("current_version", "name", "current_version__version")
    }
    deployed = (
        NodeDeployment.objects.filter(
            node__in=list(rows),
            state=NodeDeployment.State.DEPLOYED,
            version__deleted_at__isnull=True,
        )
        .order_by("version__project__name", "-version__number")
        .values_list("node", "version", "version__project__name", "version__version")
    )
    held: dict[int, set[int]] = defaultdict(set)
    for node_id, version_id, project, version in deployed:
        rows[node_id].versions.append(DeployedVersion(project, version, version_id in current))
        held[node_id].add(version_id)
    for row in rows.values():
        row.missing_current = sorted(
            label for vid, label in current.items() if vid not in held[row.node.pk]
        )
    return [rows[node.pk] for node in nodes]


def poller_of(node: Node) -> str:
    """The poller replica that polled the node in its last cycle, by its own report; empty when
    none did (no poller runs, or only one-off cycles that poll everything and do not register)."""
    for replica in live_replicas():
        if node.pk in (replica.node_ids or []):
            return replica.name
    return ""


def recent_jobs(node: Node) -> list[Job]:
    return list(
        Job.objects.filter(node=node)
        .select_related("run__task", "project", "version")
        .only(
            "id",
            "spider",
            "state",
            "attempt",
            "created_at",
            "started_at",
            "finished_at",
            "items",
            "errors",
            "run__task__name",
            "project__name",
            "version__version",
        )
        # Ids grow with creation time; ordering by id alone is served by the node index.
        .order_by("-id")[:RECENT_JOBS]
    )


def deployments(node: Node) -> list[NodeDeployment]:
    return list(
        NodeDeployment.objects.filter(node=node, version__deleted_at__isnull=True)
        .select_related("version__project")
        .defer("version__egg")
        .order_by("version__project__name", "-version__number")
    )


@dataclass
class HealthHistory:
    span: str
    checks: int = 0
    failures: int = 0
    mean_latency: float | None = None
    p95_latency: float | None = None
    chart_json: str = ""
    changes: list[HealthSample] = field(default_factory=list)

    @property
    def uptime_percent(self) -> float | None:
        return 100 * (self.checks - self.failures) / self.checks if self.checks else None


def _label(at: datetime, span: str) -> str:
    local = timezone.localtime(at)
    return local.strftime("%m-%d %H:%M" if span == "7d" else "%H:%M")


# A point of the chart: (start, mean latency of answered checks in s or None, most jobs, failures).
Point = tuple[datetime, float | None, int, int]


def _sample_rows(node: Node, since: datetime) -> list[tuple[Any, ...]]:
    """(at, ok, latency, running, pending) of the node's samples since ``since``, oldest first.

    Read with one plain query: a week is about 10,000 rows, and the ORM's per-value conversions
    would cost more than the rest of the page.
    """
    quote = connection.ops.quote_name
    meta = HealthSample._meta
    at, node_id = (quote(meta.get_field(name).column) for name in ("at", "node"))
    fields = ", ".join(
        quote(meta.get_field(name).column) for name in ("at", "ok", "latency", "running", "pending")
    )
    sql = (
        f"SELECT {fields} FROM {quote(meta.db_table)} "
        f"WHERE {node_id} = %s AND {at} >= %s ORDER BY {at}"
    )
    since_value = HealthSample._meta.get_field("at").get_db_prep_value(since, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [node.pk, since_value])
        return cursor.fetchall()


def _points(rows: list[tuple[Any, ...]]) -> list[Point]:
    """At most MAX_POINTS buckets of consecutive samples."""
    size = max(1, math.ceil(len(rows) / MAX_POINTS))
    points: list[Point] = []
    for start in range(0, len(rows), size):
        bucket = rows[start : start + size]
        answered = [latency for _, ok, latency, _, _ in bucket if ok and latency is not None]
        at = bucket[0][0]
        if isinstance(at, str):  # a backend that hands back text
            at = parse_datetime(at)
        if timezone.is_naive(at):
            at = timezone.make_aware(at, UTC)
        points.append(
            (
                at,
                sum(answered) / len(answered) if answered else None,
                max(running + pending for *_, running, pending in bucket),
                sum(1 for _, ok, *_ in bucket if not ok),
            )
        )
    return points


def _chart(points: list[Point], span: str) -> str:
    """Latency of answered checks (ms), jobs on the node, and failed checks."""
    spec: dict[str, Any] = {
        "type": "line",
        "labels": [_label(at, span) for at, *_ in points],
        "datasets": [
            {
                "label": "latency (ms)",
                "data": [round(1000 * p[1], 1) if p[1] is not None else None for p in points],
                "yAxisID": "y",
                "spanGaps": False,
            },
            {
                "label": "jobs on node",
                "data": [p[2] for p in points],
                "yAxisID": "y1",
                "stepped": True,
            },
            {
                "label": "failed checks",
                "data": [p[3] for p in points],
                "yAxisID": "y1",
                "type": "bar",
                "backgroundColor": "rgba(207, 34, 46, 0.35)",
                "barPercentage": 1.0,
                "categoryPercentage": 1.0,
            },
        ],
        "options": {
            "scales": {
                "y": {"beginAtZero": True, "title": {"display": True, "text": "ms"}},
                "y1": {
                    "beginAtZero": True,
                    "position": "right",
                    "grid": {"drawOnChartArea": False},
                    "ticks": {"precision": 0},
                },
            }
        },
    }
    return json.dumps(spec)


def health_history(node: Node, span: str) -> HealthHistory:
    """Figures and chart of the node's sampled checks over ``span``, and its last state changes."""
    span = span if span in SPANS else DEFAULT_SPAN
    samples = HealthSample.objects.filter(node=node, at__gte=timezone.now() - SPANS[span])
    answered = samples.filter(ok=True, latency__isnull=False)
    figures = samples.aggregate(
        checks=Count("id"),
        failures=Count("id", filter=Q(ok=False)),
        answered=Count("id", filter=Q(ok=True, latency__isnull=False)),
        mean=Avg("latency", filter=Q(ok=True)),
    )
    history = HealthHistory(span=span, checks=figures["checks"], failures=figures["failures"])
    history.mean_latency = figures["mean"]
    if figures["answered"]:
        rank = min(figures["answered"], math.ceil(0.95 * figures["answered"])) - 1
        history.p95_latency = answered.order_by("latency").values_list("latency", flat=True)[rank]
    if history.checks:
        since = timezone.now() - SPANS[span]
        history.chart_json = _chart(_points(_sample_rows(node, since)), span)
    history.changes = list(
        HealthSample.objects.filter(node=node, changed=True).order_by("-at")[:STATE_CHANGES]
    )
    return history
