"""The dispatcher: queued jobs to the least-loaded healthy node that may run them.

Load is counted from the database (jobs dispatching, pending or running on each node), not from
the nodes' own counters, so every scheduler replica sees the same picture and a full fleet keeps
runs waiting here, in the control plane, rather than in some node's queue.

One dispatch is three steps:

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

import base64
import http.client
import json
import logging
import os
import select
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings as django_settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from controlplane.scrapyd import ScrapydError, check_envelope

logger = logging.getLogger(__name__)

# Concurrent schedule.json calls across the fleet.
SEND_WORKERS = int(os.environ.get("CRAWLFLEET_DISPATCH_WORKERS", "16"))
# Jobs read per query while planning; planning goes on until the fleet is full or `limit` is hit.
PLAN_CHUNK = 500
# A refused job waits this long before it is offered to a node again.
REFUSAL_DELAY = timedelta(seconds=5)
# Serialises this process's write transactions. On SQLite a thread that finds the database
# locked sleeps in the busy handler's growing steps (up to 100 ms); waiting here instead hands
# over the moment the other thread commits.
WRITE_LOCK = threading.RLock()


@dataclass
class Placement:
    job: Job
    node: Node
    report_token: str


@dataclass
class SendResult:
    """What a node answered to one schedule.json (``accepted``, ``refused`` or ``unconfirmed``)."""

    placement: Placement
    outcome: str
    at: datetime
    error: str = ""


@dataclass
class _Fleet:
    """The schedulable nodes and what planning needs to know about them."""

    nodes: list[Node]
    loads: Counter[int]
    deployed: set[tuple[int, int]]
    free: int = 0
    selected_nodes: dict[int, set[int]] = field(default_factory=dict)
    # Nodes already running a shard of a fan-out run: its other shards go elsewhere if possible.
    run_nodes: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))


def node_loads(nodes: list[Node]) -> Counter[int]:
    """Jobs dispatching, pending or running on each node, from the database."""
    rows = (
        Job.objects.filter(state__in=Job.ON_NODE, node__in=nodes)
        .values("node")
        .annotate(count=Count("id"))
    )
    return Counter({row["node"]: row["count"] for row in rows})


def _deployed_versions(nodes: list[Node]) -> set[tuple[int, int]]:
    return set(
        NodeDeployment.objects.filter(
            node__in=nodes, state=NodeDeployment.State.DEPLOYED
        ).values_list("node_id", "version_id")
    )


def _eligible(job: Job, fleet: _Fleet) -> list[Node]:
    """Nodes the job's selector allows that have its version; previous nodes only as a last resort."""
    task = job.run.task
    nodes = fleet.nodes
    if task is not None:
        selected = fleet.selected_nodes.get(task.pk, set())
        nodes = [n for n in nodes if n.matches(task.selector, task.selector_tags, selected)]
    nodes = [n for n in nodes if (n.pk, job.version_id) in fleet.deployed]
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


def log_url(node: Node, job: Job) -> str:
    return f"{node.url.rstrip('/')}/logs/{job.project.name}/{job.spider}/{job.scrapyd_job_id}.log"


def _fleet() -> _Fleet | None:
    nodes = list(
        Node.objects.filter(enabled=True, state__in=[Node.State.UP, Node.State.DEGRADED]).order_by(
            "pk"
        )
    )
    if not nodes:
        return None
    if connection.features.has_select_for_update:
        # Planners of all replicas queue up here (PostgreSQL), so a free slot is filled once.
        list(Node.objects.select_for_update().filter(pk__in=[n.pk for n in nodes]).order_by("pk"))
    loads = node_loads(nodes)
    free = sum(max(0, n.capacity - loads[n.pk]) for n in nodes)
    return _Fleet(nodes, loads, _deployed_versions(nodes), free)


def _due(now: datetime) -> QuerySet[Job]:
    return Job.objects.filter(state=Job.State.QUEUED, cancel_requested=False).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )


def _due_jobs(now: datetime, after: tuple[datetime, int] | None, count: int) -> list[Job]:
    due = (
        _due(now)
        .select_related("run__task", "project", "version")
        .defer("version__egg")
        .order_by("created_at", "pk")
    )
    if after is not None:
        created_at, pk = after
        due = due.filter(Q(created_at__gt=created_at) | Q(created_at=created_at, pk__gt=pk))
    if connection.features.has_select_for_update_skip_locked:
        # Rows another transaction is changing (a cancel, another planner) are left for later.
        due = due.select_for_update(skip_locked=True, of=("self",))
    return list(due[:count])


def _update_each(fields: list[str], rows: list[tuple[Any, ...]], only_in: str) -> int:
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
    fields = ["state", "node", "dispatched_at", "log_url", "report_token_hash", "updated_at"]
    rows = [
        (
            Job.State.DISPATCHING,
            p.node.pk,
            now,
            p.job.log_url,
            p.job.report_token_hash,
            now,
            p.job.pk,
        )
        for p in placements
    ]
    if _update_each(fields, rows, only_in=Job.State.QUEUED) == len(placements):
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
    """Claim up to ``limit`` due queued jobs and assign each a node (in one write transaction)."""
    now = timezone.now()
    placements: list[Placement] = []
    if not _due(now).exists():
        return []  # the usual idle tick: a read, without taking the write lock
    with WRITE_LOCK, transaction.atomic():
        fleet = _fleet()
        if fleet is None or fleet.free <= 0:
            return []
        after: tuple[datetime, int] | None = None
        while fleet.free > 0 and len(placements) < limit:
            batch = _due_jobs(now, after, PLAN_CHUNK)
            if not batch:
                break
            after = (batch[-1].created_at, batch[-1].pk)
            tasks = {job.run.task.pk: job.run.task for job in batch if job.run.task is not None}
            fleet.selected_nodes.update(_selected_nodes(tasks.values()))
            first_active = _first_active_runs(tasks.values())
            for run_id, node_ids in _fanout_nodes(batch).items():
                fleet.run_nodes[run_id] |= node_ids
            for job in batch:
                task = job.run.task
                first = first_active.get(task.pk) if task is not None else None
                if first is not None and (job.run.scheduled_for, job.run.pk) > first:
                    continue  # overlap=queue: an earlier run of this task is still going
                node = pick_node(_eligible(job, fleet), fleet.loads)
                if node is None:
                    continue
                token = job.issue_report_token()
                job.state = Job.State.DISPATCHING
                job.node = node
                job.dispatched_at = now
                job.log_url = log_url(node, job)
                job.updated_at = now
                fleet.loads[node.pk] += 1
                fleet.free -= 1
                if job.run.crawl_id:
                    fleet.run_nodes[job.run_id].add(node.pk)
                placements.append(Placement(job, node, token))
                if fleet.free <= 0 or len(placements) >= limit:
                    break
            if len(batch) < PLAN_CHUNK:
                break
        return _claim(placements, now)


def report_settings(job: Job, token: str) -> dict[str, str]:
    """Settings that let the spider report its outcome and heartbeat to us."""
    base = django_settings.CRAWLFLEET_PUBLIC_URL.rstrip("/")
    return {
        "CRAWLFLEET_REPORT_URL": f"{base}/api/v1/report/{job.scrapyd_job_id}",
        "CRAWLFLEET_JOB_TOKEN": token,
        "CRAWLFLEET_HEARTBEAT_INTERVAL": str(django_settings.CRAWLFLEET_SPIDER_HEARTBEAT),
    }


# --- sending ------------------------------------------------------------------------------------
class NodeConnection:
    """One sender thread's keep-alive HTTP connection to one node, for schedule.json only.

    The hot path of a burst: plain ``http.client`` costs about a third of the CPU per call of a
    ``requests`` session, which matters when hundreds of jobs go out at once. Answers are read
    exactly as :class:`~controlplane.scrapyd.ScrapydClient` reads them (HTTP 200 with
    ``status: error`` is a refusal).
    """

    def __init__(self, url: str, username: str, password: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.endpoint = parts.path.rstrip("/") + "/schedule.json"
        self.timeout = timeout
        self.headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if username:
            credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {credentials}"
        self._connection: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        connection = self._connection
        if connection is not None and connection.sock is not None:
            # The node closed an idle connection: reconnect before sending, never after.
            readable, _, _ = select.select([connection.sock], [], [], 0)
            if readable:
                connection.close()
                connection = None
        if connection is None:
            factory = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            connection = factory(self.host, self.port, timeout=self.timeout)
            self._connection = connection
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def schedule(self, form: list[tuple[str, str]]) -> str:
        """POST schedule.json; the job id, or ScrapydError (``unreachable`` if no answer)."""
        try:
            connection = self._open()
            connection.request("POST", self.endpoint, urlencode(form), self.headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ScrapydError(f"{self.url} unreachable: {exc}", unreachable=True) from exc
        if response.status == 401:
            raise ScrapydError(f"{self.url} refused our credentials (401)")
        if response.status >= 400:
            raise ScrapydError(f"{self.url} schedule.json answered HTTP {response.status}")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ScrapydError(
                f"{self.url} schedule.json answered something that is not JSON"
            ) from exc
        return str(check_envelope(payload, "schedule.json").get("jobid", ""))


_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _send_pool() -> ThreadPoolExecutor:
    """Long-lived sender threads, so their keep-alive connections to the nodes are reused."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=SEND_WORKERS, thread_name_prefix="dispatch")
        return _pool


def _connection_to(node: Node) -> NodeConnection:
    """This thread's connection to ``node``."""
    connections: dict[tuple[str, str, str], NodeConnection] = _local.__dict__.setdefault(
        "connections", {}
    )
    key = (node.url, node.username, node.password)
    connection = connections.get(key)
    if connection is None:
        connection = connections[key] = NodeConnection(
            node.url, node.username, node.password, django_settings.CRAWLFLEET_NODE_TIMEOUT
        )
    return connection


def schedule_form(job: Job, report_token: str) -> list[tuple[str, str]]:
    """schedule.json's form: always the pinned ``_version`` (Scrapyd's default is a string sort)."""
    args = dict(job.args)
    if job.run.crawl_id and "crawl_id" not in args:
        args["crawl_id"] = job.run.crawl_id
    job_settings = {**job.settings, **report_settings(job, report_token)}
    form = [
        ("project", job.project.name),
        ("spider", job.spider),
        ("_version", job.version.version),
        ("jobid", job.scrapyd_job_id),
    ]
    form += [("setting", f"{key}={value}") for key, value in job_settings.items()]
    form += [(key, str(value)) for key, value in args.items()]
    return form


def send(placement: Placement) -> SendResult:
    """schedule.json on the placement's node; no database access (runs on sender threads)."""
    job, node = placement.job, placement.node
    try:
        _connection_to(node).schedule(schedule_form(job, placement.report_token))
    except ScrapydError as exc:
        outcome = "unconfirmed" if exc.unreachable else "refused"
        return SendResult(placement, outcome, timezone.now(), str(exc))
    return SendResult(placement, "accepted", timezone.now())


def record(results: list[SendResult]) -> None:
    """Write the outcome of sends: accepted in one statement, refusals one by one (rare)."""
    accepted = []
    for result in results:
        job, node = result.placement.job, result.placement.node
        if result.outcome == "accepted":
            job.state, job.dispatched_at, job.updated_at = Job.State.PENDING, result.at, result.at
            accepted.append(job)
        elif result.outcome == "refused":
            logger.warning("node %s refused job %s: %s", node.name, job.pk, result.error)
            with WRITE_LOCK:
                job.transition(
                    [Job.State.DISPATCHING],
                    Job.State.QUEUED,
                    node=None,
                    dispatched_at=None,
                    log_url="",
                    not_before=result.at + REFUSAL_DELAY,
                    reason=f"refused by {node.name}: {result.error}"[:2000],
                    avoid_nodes=sorted({*(job.avoid_nodes or []), node.pk}),
                )
        else:
            # The node may or may not have queued it; the poller reconciles by job id.
            logger.warning(
                "dispatch of job %s to %s is unconfirmed: %s", job.pk, node.name, result.error
            )
    if accepted:
        # The poller may have seen the job on its node first and moved it on: only DISPATCHING.
        with WRITE_LOCK, transaction.atomic():
            _update_each(
                ["state", "dispatched_at", "updated_at"],
                [(Job.State.PENDING, j.dispatched_at, j.updated_at, j.pk) for j in accepted],
                only_in=Job.State.DISPATCHING,
            )


def send_all(placements: list[Placement]) -> int:
    """Send concurrently; record each node's outcomes as soon as that node has answered all."""
    if not placements:
        return 0
    pool = _send_pool()
    remaining: Counter[int] = Counter(p.node.pk for p in placements)
    answered: dict[int, list[SendResult]] = defaultdict(list)
    futures: list[Future[SendResult]] = [pool.submit(send, p) for p in placements]
    accepted = 0
    for future in as_completed(futures):
        result = future.result()
        node_id = result.placement.node.pk
        answered[node_id].append(result)
        remaining[node_id] -= 1
        if remaining[node_id] == 0:
            results = answered.pop(node_id)
            accepted += sum(r.outcome == "accepted" for r in results)
            try:
                record(results)
            except Exception:
                # The jobs stay dispatching; the poller finds them on the node (or not).
                logger.exception("could not record dispatch outcomes for node %s", node_id)
    return accepted


def dispatch(limit: int = 1000) -> int:
    """Plan and send; returns how many jobs the nodes accepted."""
    if not connection.in_atomic_block:  # a caller's transaction (a test's) keeps its connection
        close_old_connections()
    return send_all(plan(limit))
