"""The fleet counted for monitoring: a handful of aggregate queries, whatever the number of jobs.

Read at each scrape of ``/metrics`` (:mod:`controlplane.metrics`), by any web worker of any
replica, so every figure comes from the database and never from a process's memory. Each
function is one ``GROUP BY`` (or a lookup of a few rows per task or node) on an index that
starts with the columns it filters and groups by; none loops over jobs in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.jobs.placement import node_loads, placeable_nodes
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun

UNKNOWN_CAUSE = "unknown"  # ended before causes were recorded


@dataclass
class JobCounts:
    by_state: dict[str, int]  # every state, zero included
    ended: dict[tuple[str, str], int]  # (final state, cause) -> jobs


def job_counts() -> JobCounts:
    """Jobs by state, and ended ones by state and cause: one GROUP BY over (state, cause)."""
    result = JobCounts(by_state=dict.fromkeys(Job.State.values, 0), ended={})
    rows = Job.objects.order_by().values_list("state", "cause").annotate(n=Count("pk"))
    for state, cause, n in rows:
        result.by_state[state] = result.by_state.get(state, 0) + n
        if state in Job.FINAL:
            key = (state, cause or UNKNOWN_CAUSE)
            result.ended[key] = result.ended.get(key, 0) + n
    return result


def runs_by_state() -> dict[str, int]:
    """Task runs by state, every state present."""
    counts = dict.fromkeys(TaskRun.State.values, 0)
    for state, n in TaskRun.objects.order_by().values_list("state").annotate(n=Count("pk")):
        counts[state] = n
    return counts


@dataclass
class QueueDepth:
    queued: int  # waiting in the control plane for a node
    backoff: int  # of those, held until their retry backoff has passed


def queue_depth(now: datetime | None = None) -> dict[str, QueueDepth]:
    """Queued jobs by project name (every project, zero included)."""
    now = now or timezone.now()
    names = dict(Project.objects.values_list("pk", "name"))
    depth = {name: QueueDepth(0, 0) for name in names.values()}
    rows = (
        Job.objects.filter(state=Job.State.QUEUED)
        .order_by()
        .values_list("project")
        .annotate(n=Count("pk"), held=Count("pk", filter=Q(not_before__gt=now)))
    )
    for project_id, n, held in rows:
        depth[names.get(project_id, str(project_id))] = QueueDepth(n, held)
    return depth


@dataclass
class NodeFigures:
    name: str
    state: str
    enabled: bool
    draining: bool
    schedulable: bool  # takes new jobs now, as placement decides
    capacity: int  # job slots (Scrapyd max_proc)
    jobs: int  # dispatching, pending or running on it, as placement counts load
    latency: float | None  # of the last health check, seconds
    last_seen: datetime | None


def node_figures() -> list[NodeFigures]:
    """Every node with its load: three queries, the rules of placement reused."""
    nodes = list(
        Node.objects.only(
            "name", "state", "enabled", "draining", "capacity", "last_latency", "last_seen"
        ).order_by("name")
    )
    loads = node_loads(nodes)
    placeable = set(placeable_nodes().values_list("pk", flat=True))
    return [
        NodeFigures(
            name=node.name,
            state=node.state,
            enabled=node.enabled,
            draining=node.draining,
            schedulable=node.pk in placeable,
            capacity=node.capacity,
            jobs=loads.get(node.pk, 0),
            latency=node.last_latency,
            last_seen=node.last_seen,
        )
        for node in nodes
    ]


@dataclass
class TaskFigures:
    project: str
    task: str  # empty for ad-hoc jobs (Scrapyd's schedule.json, outside any task)
    items: int = 0  # of the ended jobs
    pages: int = 0
    last_success_items: int | None = None  # of the newest successful run
    last_success_at: datetime | None = None


def task_figures() -> list[TaskFigures]:
    """Items and pages of every task's ended jobs (one GROUP BY), and what its newest successful
    run brought in (its id per task from the runs' (task, scheduled_for) index, then one sum)."""
    projects = dict(Project.objects.values_list("pk", "name"))
    newest_success = TaskRun.objects.filter(
        task=OuterRef("pk"), state__in=[TaskRun.State.SUCCEEDED, TaskRun.State.DEGRADED]
    ).order_by("-scheduled_for")
    tasks = (
        Task.objects.order_by("name")
        .values_list("pk", "name", "project")
        .annotate(last_run=Subquery(newest_success.values("pk")[:1]))
    )
    figures: dict[int | None, TaskFigures] = {}
    last_runs: dict[int, int] = {}
    for pk, name, project_id, last_run in tasks:
        figures[pk] = TaskFigures(projects.get(project_id, str(project_id)), name)
        if last_run is not None:
            last_runs[last_run] = pk
    adhoc: dict[int, TaskFigures] = {}
    rows = (
        Job.objects.filter(state__in=Job.FINAL)
        .order_by()
        .values_list("task", "project")
        .annotate(items=Sum("items"), pages=Sum("pages"))
    )
    for task_id, project_id, items, pages in rows:
        if task_id is None:
            figure = adhoc.setdefault(
                project_id, TaskFigures(projects.get(project_id, str(project_id)), "")
            )
        else:
            figure = figures.setdefault(task_id, TaskFigures(str(project_id), str(task_id)))
        figure.items += items or 0
        figure.pages += pages or 0
    if last_runs:
        successes = (
            Job.objects.filter(run__in=last_runs, state__in=Job.SUCCESSFUL)
            .order_by()
            .values_list("run")
            .annotate(items=Sum("items"), at=Max("finished_at"))
        )
        for run_id, items, at in successes:
            figure = figures[last_runs[run_id]]
            figure.last_success_items, figure.last_success_at = items or 0, at
    return [*figures.values(), *adhoc.values()]
