"""Who runs next, against the database: concurrency caps, in-flight counts and why-pending texts.

The planner (:mod:`controlplane.jobs.placement`) loads :class:`Limits` inside its write
transaction, after the node rows are locked (PostgreSQL) or the write lock is taken (SQLite), so
the in-flight counts it checks caps against include every other replica's committed claims: two
dispatchers together never exceed a cap. The ordering rules themselves are
:mod:`controlplane.lib.queueorder` (plain data, unit-tested).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.utils import timezone

from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node, TagCap
from controlplane.scheduling.models import Task

# The planner's words for jobs that it did not reach because every slot was taken.
FLEET_FULL = "waiting: all {slots} slots of the fleet are busy"
NO_NODE_UP = "waiting: no node is up"
NOT_PLANNED = "waiting for the dispatcher"


@dataclass
class Limits:
    """The caps, and how many jobs are in flight against each, as the planner places more."""

    projects: dict[int, Project]
    tag_caps: dict[str, int]
    node_tags: dict[int, list[str]]
    by_project: Counter[int] = field(default_factory=Counter)
    by_task: Counter[int] = field(default_factory=Counter)
    by_spider: Counter[tuple[int, str]] = field(default_factory=Counter)
    by_tag: Counter[str] = field(default_factory=Counter)

    @classmethod
    def load(cls) -> Limits:
        """Three small queries: projects, tag caps, and in-flight jobs grouped."""
        tag_caps = dict(TagCap.objects.values_list("tag", "max_concurrent"))
        limits = cls(
            projects={p.pk: p for p in Project.objects.only(*PROJECT_FIELDS)},
            tag_caps=tag_caps,
            node_tags=(
                {pk: tags or [] for pk, tags in Node.objects.values_list("pk", "tags")}
                if tag_caps
                else {}
            ),
        )
        rows = (
            Job.objects.filter(state__in=Job.ON_NODE)
            .values_list("project_id", "task_id", "spider", "node_id")
            .annotate(count=Count("id"))
        )
        for project_id, task_id, spider, node_id, count in rows:
            limits.by_project[project_id] += count
            if task_id is not None:
                limits.by_task[task_id] += count
            limits.by_spider[(project_id, spider)] += count
            for tag in limits.node_tags.get(node_id, ()):
                limits.by_tag[tag] += count
        return limits

    def weight(self, project_id: int) -> float:
        project = self.projects.get(project_id)
        return project.share_weight if project is not None else 1.0

    def project_blocked(self, project_id: int) -> str:
        """Why nothing more of this project may start now ('' if it may)."""
        project = self.projects.get(project_id)
        if project is None or project.max_concurrent is None:
            return ""
        if self.by_project[project_id] >= project.max_concurrent:
            return f"waiting: project {project.name} at its cap of {project.max_concurrent} running"
        return ""

    def task_blocked(self, task: Task | None) -> str:
        if task is None or task.max_concurrent is None:
            return ""
        if self.by_task[task.pk] >= task.max_concurrent:
            return f"waiting: task {task.name} at its cap of {task.max_concurrent} running"
        return ""

    def spider_blocked(self, project_id: int, spider: str) -> str:
        project = self.projects.get(project_id)
        cap = (project.spider_caps or {}).get(spider) if project is not None else None
        if cap is None or self.by_spider[(project_id, spider)] < cap:
            return ""
        return f"waiting: spider {spider} of {project.name} at its cap of {cap} running"

    def node_blocked(self, node: Node) -> str:
        """Why this node may take nothing more because of a tag cap ('' if it may)."""
        for tag in node.tags or ():
            cap = self.tag_caps.get(tag)
            if cap is not None and self.by_tag[tag] >= cap:
                return f"waiting: nodes tagged {tag} at their cap of {cap} running"
        return ""

    def took(self, job: Job, node: Node) -> None:
        self.by_project[job.project_id] += 1
        if job.task_id is not None:
            self.by_task[job.task_id] += 1
        self.by_spider[(job.project_id, job.spider)] += 1
        for tag in node.tags or ():
            self.by_tag[tag] += 1


PROJECT_FIELDS = ("pk", "name", "share_weight", "max_concurrent", "spider_caps")


def no_node_text(job: Job, task: Task | None, node_names: list[str]) -> str:
    """``waiting: no up node with tag eu has version 20261201``, by the task's selector."""
    where = "no up node"
    if task is not None and task.selector == Task.Selector.TAGS and task.selector_tags:
        tags = task.selector_tags
        where += f" with tag{'s' if len(tags) > 1 else ''} {', '.join(tags)}"
    elif task is not None and task.selector == Task.Selector.NODES:
        where += f" among {', '.join(sorted(node_names)) or 'the chosen nodes'}"
    return f"waiting: {where} has version {job.version.version}"


def busy_text(nodes: list[Node]) -> str:
    names = ", ".join(sorted(n.name for n in nodes)[:5]) + ("…" if len(nodes) > 5 else "")
    return f"waiting: every node that may run it is busy ({names})"


def overlap_text(task: Task) -> str:
    return f"waiting: an earlier run of task {task.name} is still going (overlap: queue)"


def backoff_text(not_before: datetime) -> str:
    return f"backoff until {timezone.localtime(not_before):%H:%M:%S}"


def waiting_text(job: Job, *, position: bool = False, now: datetime | None = None) -> str:
    """Why a queued job has not started, in words ('' for a job that is not queued).

    ``position`` adds how many runs of its project are ahead of it when the fleet is full
    (one counting query: for a job's own page, not for lists).
    """
    if job.state != Job.State.QUEUED:
        return ""
    now = now or timezone.now()
    if job.cancel_requested:
        return "cancelling"
    if job.not_before is not None and job.not_before > now:
        if job.attempt == 1 and job.run.scheduled_for == job.not_before:
            return f"due at {timezone.localtime(job.not_before):%H:%M:%S}"  # recorded ahead
        return backoff_text(job.not_before)
    text = job.waiting_reason or NOT_PLANNED
    if position and text.startswith(FLEET_FULL.split("{", 1)[0]) and job.queue_rank is not None:
        ahead = runs_ahead(job, now)
        text += f"; {ahead} run{'' if ahead == 1 else 's'} of higher priority ahead"
    return text


def runs_ahead(job: Job, now: datetime) -> int:
    """Due queued jobs of the same project that go before this one."""
    rank = job.queue_rank
    return (
        Job.objects.filter(
            state=Job.State.QUEUED, project_id=job.project_id, cancel_requested=False
        )
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(Q(queue_rank__lt=rank) | Q(queue_rank=rank, pk__lt=job.pk))
        .count()
    )


def recent(now: datetime) -> datetime:
    """New jobs, for the cheap note on a full fleet: the index range of the last minutes."""
    return now - timedelta(minutes=10)
