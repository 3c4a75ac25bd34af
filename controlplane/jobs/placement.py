"""Placement: which queued job goes to which node, the least-loaded healthy one that may run it.

Load is counted from the database (jobs dispatching, pending or running on each node), not from
the nodes' own counters, so every scheduler replica sees the same picture and a full fleet keeps
runs waiting here, in the control plane, rather than in some node's queue.

One dispatch is three steps; this module is the first, :mod:`controlplane.jobs.dispatch` the rest:

1. :func:`plan` claims due queued jobs and assigns each a node in one write transaction: node
   rows are locked first (PostgreSQL; SQLite transactions already start with the write lock), so
   replicas plan one after another and never both fill the same free slot, and the claim itself is
   conditional on the job still being ``queued``, so no job is sent twice.
2. The claimed jobs are sent to their nodes concurrently, on long-lived threads that each keep a
   keep-alive HTTP connection per node, and without touching the database.
3. As soon as all of one node's sends are answered, their outcomes are written in one batch:
   accepted jobs become ``pending``; refused ones are queued again for another node; unanswered
   ones stay ``dispatching`` for the poller, which asks the node and re-queues a job it never got
   once ``CRAWLFLEET_DISPATCH_GRACE`` has passed.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment
from controlplane.jobs.models import Job
from controlplane.lib.fairlock import FairRLock
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun

logger = logging.getLogger(__name__)

# Jobs read per query while planning; planning goes on until the fleet is full or `limit` is hit.
PLAN_CHUNK = 500
# A refused job waits this long before it is offered to a node again.
REFUSAL_DELAY = timedelta(seconds=5)
# Serialises this process's write transactions. On SQLite a thread that finds the database
# locked sleeps in the busy handler's growing steps (up to 100 ms); waiting here instead hands
# over the moment the other thread commits. Fair: the longest waiter goes next, so a fire
# recording its burst chunk by chunk lets the planner in between the chunks.
WRITE_LOCK = FairRLock()


@dataclass
class Placement:
    job: Job
    node: Node
    report_token: str


@dataclass
class _Fleet:
    """The schedulable nodes and what planning needs to know about them."""

    nodes: list[Node]
    loads: Counter[int]
    deployed: set[tuple[int, int]]
    free: int = 0
    capacity: int = 0
    selected_nodes: dict[int, set[int]] = field(default_factory=dict)
    # Nodes already running a shard of a fan-out run: its other shards go elsewhere if possible.
    run_nodes: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))


def node_loads(nodes: list[Node]) -> Counter[int]:
    """Jobs dispatching, pending or running on each node, from the database.

    Grouped by (state, node), the order of ``job_state_node_idx``, so only the in-flight part
    of that index is read; grouped by node alone, or filtered on the nodes too, SQLite's planner
    takes the node index and walks every node's whole history.
    """
    wanted = {node.pk for node in nodes}
    loads: Counter[int] = Counter()
    rows = (
        Job.objects.filter(state__in=Job.ON_NODE)
        .order_by()
        .values_list("state", "node")
        .annotate(count=Count("id"))
    )
    for _state, node, count in rows:
        if node in wanted:
            loads[node] += count
    return loads


def _deployed_versions(nodes: list[Node]) -> set[tuple[int, int]]:
    return set(
        NodeDeployment.objects.filter(
            node__in=nodes, state=NodeDeployment.State.DEPLOYED
        ).values_list("node_id", "version_id")
    )


def matching_nodes(job: Job, fleet: _Fleet) -> list[Node]:
    """Placeable nodes the job's selector allows that have its version deployed."""
    task = job.run.task
    nodes = fleet.nodes
    if task is not None:
        selected = fleet.selected_nodes.get(task.pk, set())
        nodes = [n for n in nodes if n.matches(task.selector, task.selector_tags, selected)]
    return [n for n in nodes if (n.pk, job.version_id) in fleet.deployed]


def prefer_nodes(job: Job, nodes: list[Node], fleet: _Fleet) -> list[Node]:
    """Of ``nodes``, those to try first: not a previous attempt's, not a sibling shard's."""
    avoid = set(job.avoid_nodes or [])
    fresh = [n for n in nodes if n.pk not in avoid]
    siblings = fleet.run_nodes.get(job.run_id) if job.run.crawl_id else None
    if siblings:
        spread = [n for n in fresh if n.pk not in siblings]
        if any(fleet.loads[n.pk] < n.capacity for n in spread):
            return spread
    if any(fleet.loads[n.pk] < n.capacity for n in fresh):
        return fresh
    return nodes


def pick_node(candidates: list[Node], loads: Counter[int]) -> Node | None:
    """The node with the lowest (load + 1) / (capacity * weight) that still has a free slot."""
    free = [n for n in candidates if loads[n.pk] < n.capacity]
    if not free:
        return None
    return min(free, key=lambda n: ((loads[n.pk] + 1) / (n.capacity * n.weight), n.name))


def _selected_nodes(tasks: Iterable[Task]) -> dict[int, set[int]]:
    """task id -> node ids, for tasks that name their nodes (one query)."""
    ids = {t.pk for t in tasks if t.selector == Task.Selector.NODES}
    if not ids:
        return {}
    through = Task.selector_nodes.through
    selected: dict[int, set[int]] = defaultdict(set)
    for task_id, node_id in through.objects.filter(task_id__in=ids).values_list(
        "task_id", "node_id"
    ):
        selected[task_id].add(node_id)
    return selected


def _first_active_runs(tasks: Iterable[Task]) -> dict[int, tuple[datetime, int]]:
    """task id -> (scheduled_for, pk) of its oldest active run, for overlap=queue tasks."""
    ids = {t.pk for t in tasks if t.overlap == Task.Overlap.QUEUE}
    if not ids:
        return {}
    first: dict[int, tuple[datetime, int]] = {}
    rows = (
        TaskRun.objects.filter(task_id__in=ids, state=TaskRun.State.ACTIVE)
        .order_by("scheduled_for", "pk")
        .values_list("task_id", "scheduled_for", "pk")
    )
    for task_id, scheduled_for, pk in rows:
        first.setdefault(task_id, (scheduled_for, pk))
    return first


def _fanout_nodes(jobs: Iterable[Job]) -> dict[int, set[int]]:
    """run id -> nodes its shards are on, for fan-out runs (one query)."""
    ids = {job.run_id for job in jobs if job.run.crawl_id}
    placed: dict[int, set[int]] = defaultdict(set)
    if ids:
        rows = Job.objects.filter(run_id__in=ids, state__in=Job.ON_NODE).values_list(
            "run_id", "node_id"
        )
        for run_id, node_id in rows:
            placed[run_id].add(node_id)
    return placed


def placeable_nodes() -> QuerySet[Node]:
    """Nodes that may take new jobs: enabled, not draining, up or degraded. A draining node's
    jobs keep running and are still polled; it only gets nothing new."""
    return Node.objects.filter(
        enabled=True, draining=False, state__in=[Node.State.UP, Node.State.DEGRADED]
    )


def free_slots() -> int:
    """Free slots of the placeable nodes right now (a read, no lock: an estimate)."""
    nodes = list(placeable_nodes())
    loads = node_loads(nodes)
    return sum(max(0, n.capacity - loads[n.pk]) for n in nodes)


def _fleet() -> _Fleet | None:
    nodes = list(placeable_nodes().order_by("pk"))
    if not nodes:
        return None
    if connection.features.has_select_for_update:
        # Planners of all replicas queue up here (PostgreSQL), so a free slot is filled once.
        list(Node.objects.select_for_update().filter(pk__in=[n.pk for n in nodes]).order_by("pk"))
    loads = node_loads(nodes)
    free = sum(max(0, n.capacity - loads[n.pk]) for n in nodes)
    capacity = sum(n.capacity for n in nodes)
    return _Fleet(nodes, loads, _deployed_versions(nodes), free, capacity)


def _due(now: datetime) -> QuerySet[Job]:
    return Job.objects.filter(state=Job.State.QUEUED, cancel_requested=False).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )


def update_each(fields: list[str], rows: list[tuple[Any, ...]], only_in: str) -> int:
    """``UPDATE job SET <fields> WHERE id = ? AND state = only_in`` for each row, as one batch.

    A single prepared statement run for every row: far cheaper than an ORM bulk_update (whose
    CASE expressions grow with the batch), and still conditional on each job's state. Each row
    is the field values followed by the job id. Returns how many rows changed.
    """
    if not rows:
        return 0
    ops = connection.ops
    columns = [Job._meta.get_field(name) for name in fields]
    assignments = ", ".join(f"{ops.quote_name(field.column)} = %s" for field in columns)
    sql = (
        f"UPDATE {ops.quote_name(Job._meta.db_table)} SET {assignments} "
        f"WHERE {ops.quote_name('id')} = %s AND {ops.quote_name('state')} = %s"
    )
    adapted = []
    for row in rows:
        values = [
            field.get_db_prep_save(value, connection)
            for field, value in zip(columns, row[:-1], strict=True)
        ]
        adapted.append((*values, row[-1], only_in))
    with connection.cursor() as cursor:
        cursor.executemany(sql, adapted)
        return cursor.rowcount


def _claim(placements: list[Placement], now: datetime) -> list[Placement]:
    """Write the claims in one batch, each conditional on its job still being queued."""
    if not placements:
        return []
    fields = [
        "state",
        "node",
        "dispatched_at",
        "log_url",
        "report_token_hash",
        "updated_at",
        "waiting_reason",
    ]
    rows = [
        (
            Job.State.DISPATCHING,
            p.node.pk,
            now,
            p.job.log_url,
            p.job.report_token_hash,
            now,
            "",
            p.job.pk,
        )
        for p in placements
    ]
    if update_each(fields, rows, only_in=Job.State.QUEUED) == len(placements):
        return placements
    # Someone changed some of these rows meanwhile: keep only the claims that are ours.
    ours = set(
        Job.objects.filter(
            pk__in=[p.job.pk for p in placements],
            state=Job.State.DISPATCHING,
            report_token_hash__in=[p.job.report_token_hash for p in placements],
        ).values_list("pk", flat=True)
    )
    return [p for p in placements if p.job.pk in ours]


def plan(limit: int = 1000) -> list[Placement]:
    """Claim up to ``limit`` due queued jobs and assign each a node (in one write transaction):
    fairly between projects, by effective priority within each, within every cap
    (:mod:`controlplane.jobs.planner`)."""
    from controlplane.jobs.planner import Planner, note_idle_fleet

    now = timezone.now()
    horizon = now + timedelta(seconds=settings.CRAWLFLEET_FIRE_LEAD)
    if not _due(horizon).exists():
        return []  # the usual idle tick: a read, without taking the write lock
    with WRITE_LOCK, transaction.atomic():
        fleet = _fleet()
        if fleet is None or fleet.free <= 0:
            note_idle_fleet(now, fleet)
            return []
        planner = Planner(now, fleet, limit, horizon)
        placements = planner.run()
        planner.note_reasons()
        return _claim(placements, now)
