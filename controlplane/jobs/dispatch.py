"""The dispatcher: queued jobs to the least-loaded healthy node that may run them.

Load is counted from the database (jobs dispatching, pending or running on each node), not from
the nodes' own counters, so every scheduler replica sees the same picture and a full fleet keeps
runs waiting here, in the control plane, rather than in some node's queue. A job is claimed with a
conditional update (``queued`` to ``dispatching``) before anything is sent, so two replicas never
send the same job.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings as django_settings
from django.db import close_old_connections, connections, transaction
from django.db.models import Count, Q
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from controlplane.scrapyd import ScrapydError

logger = logging.getLogger(__name__)
SEND_WORKERS = 16


@dataclass
class Placement:
    job: Job
    node: Node
    report_token: str


def node_loads(nodes: list[Node]) -> Counter[int]:
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


def _eligible(job: Job, nodes: list[Node], deployed: set[tuple[int, int]]) -> list[Node]:
    task = job.run.task
    if task is not None:
        selected = {n.pk for n in task.selector_nodes.all()} if task.selector == "nodes" else set()
        nodes = [n for n in nodes if n.matches(task.selector, task.selector_tags, selected)]
    nodes = [n for n in nodes if (n.pk, job.version_id) in deployed]
    fresh = [n for n in nodes if n.pk not in (job.avoid_nodes or [])]
    return fresh or nodes


def pick_node(candidates: list[Node], loads: Counter[int]) -> Node | None:
    """The node with the lowest (load + 1) / (capacity * weight) that still has a free slot."""
    free = [n for n in candidates if loads[n.pk] < n.capacity]
    if not free:
        return None
    return min(free, key=lambda n: ((loads[n.pk] + 1) / (n.capacity * n.weight), n.name))


def _waiting_for_previous_run(job: Job) -> bool:
    task = job.run.task
    if task is None or task.overlap != Task.Overlap.QUEUE:
        return False
    return TaskRun.objects.filter(
        task=task, state=TaskRun.State.ACTIVE, scheduled_for__lt=job.run.scheduled_for
    ).exists()


def plan(limit: int = 1000) -> list[Placement]:
    """Claim up to ``limit`` due queued jobs and assign each a node (in one write transaction)."""
    nodes = list(Node.objects.filter(enabled=True, state__in=[Node.State.UP, Node.State.DEGRADED]))
    if not nodes:
        return []
    now = timezone.now()
    placements: list[Placement] = []
    with transaction.atomic():
        # On PostgreSQL, lock the node rows so replicas plan one after another; SQLite
        # transactions here already start with the write lock (transaction_mode=IMMEDIATE).
        list(Node.objects.select_for_update().filter(pk__in=[n.pk for n in nodes]))
        loads = node_loads(nodes)
        deployed = _deployed_versions(nodes)
        due = (
            Job.objects.filter(state=Job.State.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .select_related("run__task", "project", "version")
            .order_by("created_at", "pk")[:limit]
        )
        for job in due:
            if job.cancel_requested or _waiting_for_previous_run(job):
                continue
            node = pick_node(_eligible(job, nodes, deployed), loads)
            if node is None:
                continue
            if job.transition(
                [Job.State.QUEUED], Job.State.DISPATCHING, node=node, dispatched_at=now
            ):
                loads[node.pk] += 1
                placements.append(Placement(job, node))
    return placements


def report_settings(job: Job, token: str) -> dict[str, str]:
    """Settings that let the spider report its outcome and heartbeat to us."""
    base = django_settings.CRAWLFLEET_PUBLIC_URL.rstrip("/")
    return {
        "CRAWLFLEET_REPORT_URL": f"{base}/api/v1/report/{job.scrapyd_job_id}",
        "CRAWLFLEET_JOB_TOKEN": token,
        "CRAWLFLEET_HEARTBEAT_INTERVAL": str(django_settings.CRAWLFLEET_SPIDER_HEARTBEAT),
    }


def send(placement: Placement) -> bool:
    """schedule.json on the node; True when the node accepted the job."""
    job, node = placement.job, placement.node
    job_settings = {**job.settings, **report_settings(job, placement.report_token)}
    args = dict(job.args)
    if job.run.crawl_id and "crawl_id" not in args:
        args["crawl_id"] = job.run.crawl_id
    try:
        node.client().schedule(
            job.project.name,
            job.spider,
            version=job.version.version,
            jobid=job.scrapyd_job_id,
            settings=job_settings,
            args=args,
        )
    except ScrapydError as exc:
        if exc.unreachable:
            # The node may or may not have queued it; the poller reconciles by job id.
            logger.warning("dispatch of job %s to %s is unconfirmed: %s", job.pk, node.name, exc)
            return False
        logger.warning("node %s refused job %s: %s", node.name, job.pk, exc)
        job.transition(
            [Job.State.DISPATCHING],
            Job.State.QUEUED,
            node=None,
            reason=f"refused by {node.name}: {exc}"[:2000],
            avoid_nodes=sorted({*job.avoid_nodes, node.pk}),
        )
        return False
    base = node.url.rstrip("/")
    job.transition(
        [Job.State.DISPATCHING],
        Job.State.PENDING,
        log_url=f"{base}/logs/{job.project.name}/{job.spider}/{job.scrapyd_job_id}.log",
    )
    return True


def _send_in_thread(placement: Placement) -> bool:
    try:
        return send(placement)
    finally:
        connections.close_all()


def dispatch(limit: int = 1000) -> int:
    """Plan and send; returns how many jobs the nodes accepted."""
    close_old_connections()
    placements = plan(limit)
    if not placements:
        return 0
    if len(placements) == 1:
        return int(send(placements[0]))
    with ThreadPoolExecutor(max_workers=min(SEND_WORKERS, len(placements))) as pool:
        return sum(pool.map(_send_in_thread, placements))
