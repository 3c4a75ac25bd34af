"""What the nodes pages show, read in a fixed number of queries however large the fleet.

Load is counted from the database (jobs dispatching, pending or running on each node), as
placement counts it; the node's own counters from its last ``daemonstatus.json`` are shown beside.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import BooleanField, Case, Count, QuerySet, Sum, When
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment, Project
from controlplane.jobs.models import Job
from controlplane.jobs.placement import placeable_nodes
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


@dataclass
class FleetSummary:
    total: int = 0
    up: int = 0
    degraded: int = 0
    down: int = 0  # down or never seen
    disabled: int = 0
    draining: int = 0
    load: int = 0
    capacity: int = 0  # of the nodes that take new jobs
    queued: int = 0


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


def summary() -> FleetSummary:
    """The whole fleet at a glance (not only the page shown): three aggregate queries."""
    result = FleetSummary()
    for enabled, draining, state, count in (
        Node.objects.order_by()
        .values_list("enabled", "draining", "state")
        .annotate(count=Count("id"))
    ):
        result.total += count
        if not enabled:
            result.disabled += count
        elif draining:
            result.draining += count
        if state == Node.State.UP:
            result.up += count
        elif state == Node.State.DEGRADED:
            result.degraded += count
        else:
            result.down += count
    placeable = placeable_nodes()
    result.capacity = placeable.aggregate(total=Sum("capacity"))["total"] or 0
    result.load = Job.objects.filter(state__in=Job.ON_NODE, node__in=placeable).count()
    result.queued = Job.objects.filter(state=Job.State.QUEUED).count()
    return result


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
        .order_by("-created_at", "-id")[:RECENT_JOBS]
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


def _chart(samples: list[tuple[datetime, bool, float | None, int]], span: str) -> str:
    """Latency of answered checks (ms) and jobs on the node, averaged into buckets if many."""
    size = max(1, math.ceil(len(samples) / MAX_POINTS))
    labels, latency, jobs, failed = [], [], [], []
    for start in range(0, len(samples), size):
        bucket = samples[start : start + size]
        answered = [s[2] for s in bucket if s[1] and s[2] is not None]
        labels.append(_label(bucket[0][0], span))
        latency.append(round(1000 * sum(answered) / len(answered), 1) if answered else None)
        jobs.append(max(s[3] for s in bucket))
        failed.append(sum(1 for s in bucket if not s[1]))
    spec: dict[str, Any] = {
        "type": "line",
        "labels": labels,
        "datasets": [
            {"label": "latency (ms)", "data": latency, "yAxisID": "y", "spanGaps": False},
            {"label": "jobs on node", "data": jobs, "yAxisID": "y1", "stepped": True},
            {
                "label": "failed checks",
                "data": failed,
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
    span = span if span in SPANS else DEFAULT_SPAN
    since = timezone.now() - SPANS[span]
    samples = list(
        HealthSample.objects.filter(node=node, at__gte=since)
        .order_by("at")
        .values_list("at", "ok", "latency", "running", "pending")
    )
    points = [(at, ok, latency, running + pending) for at, ok, latency, running, pending in samples]
    history = HealthHistory(span=span, checks=len(points))
    history.failures = sum(1 for p in points if not p[1])
    answered = sorted(p[2] for p in points if p[1] and p[2] is not None)
    if answered:
        history.mean_latency = sum(answered) / len(answered)
        history.p95_latency = answered[min(len(answered) - 1, math.ceil(0.95 * len(answered)) - 1)]
    if points:
        history.chart_json = _chart(points, span)
    history.changes = list(
        HealthSample.objects.filter(node=node, changed=True).order_by("-at")[:STATE_CHANGES]
    )
    return history
