"""One planning pass: which due jobs take the free slots, fairly, within every cap; and why the
others wait.

Runs inside :func:`controlplane.jobs.placement.plan`'s write transaction. Each project's due jobs
are read best first (``queue_rank``, one index range per project, in chunks), and each free slot
is offered by :func:`controlplane.lib.queueorder.fill` to the project furthest below its share.
Jobs passed over get their reason in one UPDATE per distinct text, rows whose text is unchanged
are not written; jobs of a capped task, spider or project are excluded from further reads and
noted with one UPDATE per cap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.db import connection
from django.db.models import Q

from controlplane.jobs import queueorder
from controlplane.jobs.models import Job
from controlplane.jobs.placement import (
    PLAN_CHUNK,
    Placement,
    _due,
    _fanout_nodes,
    _first_active_runs,
    _Fleet,
    _selected_nodes,
    matching_nodes,
    pick_node,
    prefer_nodes,
)
from controlplane.lib.queueorder import Verdict, fill
from controlplane.nodes.models import Node

# Offers per pass at most: a queue that cannot go anywhere is not read to its end every tick.
MAX_OFFERS = 5000


class Planner:
    def __init__(
        self, now: datetime, fleet: _Fleet, limit: int, horizon: datetime | None = None
    ) -> None:
        self.now = now
        # Jobs due by then are planned now; their senders hold them until due (not_before).
        self.horizon = horizon or now
        self.fleet = fleet
        self.limit = limit
        self.limits = queueorder.Limits.load()
        self.placements: list[Placement] = []
        self.offers = 0
        self.first_active: dict[int, tuple[datetime, int]] = {}
        self.reasons: dict[str, list[int]] = defaultdict(list)
        # Caps reached: their jobs are read no further and noted in one statement each.
        self.capped_tasks: dict[int, str] = {}
        self.capped_spiders: dict[tuple[int, str], str] = {}
        self.capped_projects: dict[int, str] = {}
        self.node_names = {n.pk: n.name for n in fleet.nodes}
        self._refresh_free()

    # --- the pass ----------------------------------------------------------------------------
    def run(self) -> list[Placement]:
        project_ids = list(
            _due(self.horizon).order_by().values_list("project_id", flat=True).distinct()
        )
        queues: dict[int, Iterator[Job]] = {}
        for project_id in project_ids:
            blocked = self.limits.project_blocked(project_id)
            if blocked:
                self.capped_projects[project_id] = blocked
            else:
                queues[project_id] = self._queue(project_id)
        weights = {pk: self.limits.weight(pk) for pk in queues}
        running = {pk: self.limits.by_project[pk] for pk in queues}
        fill(queues, weights, running, self.limit, self._offer, rank=lambda j: j.queue_rank or 0)
        return self.placements

    def _queue(self, project_id: int) -> Iterator[Job]:
        """The project's due jobs, best first, in chunks; capped tasks and spiders left out."""
        after: tuple[float, int] | None = None
        chunk = min(PLAN_CHUNK, max(50, self.fleet.free + 10))
        while True:
            due = (
                _due(self.horizon)
                .filter(project_id=project_id)
                .select_related("run__task", "project", "version")
                .defer("version__egg")
                .order_by("queue_rank", "pk")
            )
            tasks = [pk for pk in self.capped_tasks]
            if tasks:
                due = due.exclude(task_id__in=tasks)
            spiders = [s for (p, s) in self.capped_spiders if p == project_id]
            if spiders:
                due = due.exclude(spider__in=spiders)
            if after is not None:
                rank, pk = after
                due = due.filter(Q(queue_rank__gt=rank) | Q(queue_rank=rank, pk__gt=pk))
            if connection.features.has_select_for_update_skip_locked:
                # Rows another transaction is changing (a cancel, another planner) wait.
                due = due.select_for_update(skip_locked=True, of=("self",))
            batch = list(due[:chunk])
            if not batch:
                return
            after = (batch[-1].queue_rank or 0.0, batch[-1].pk)
            self._prepare(batch)
            yield from batch
            if len(batch) < chunk:
                return
            chunk = PLAN_CHUNK

    def _prepare(self, batch: list[Job]) -> None:
        tasks = {job.run.task.pk: job.run.task for job in batch if job.run.task is not None}
        self.fleet.selected_nodes.update(_selected_nodes(tasks.values()))
        self.first_active.update(_first_active_runs(tasks.values()))
        for run_id, node_ids in _fanout_nodes(batch).items():
            self.fleet.run_nodes[run_id] |= node_ids

    def _offer(self, project_id: int, job: Job) -> Verdict:
        """Place ``job`` if it may go now, or note why not."""
        if self.fleet.free <= 0 or self.offers >= MAX_OFFERS:
            return Verdict.FULL
        self.offers += 1
        blocked = self.limits.project_blocked(project_id)
        if blocked:
            self.capped_projects[project_id] = blocked
            return Verdict.STOP
        task = job.run.task
        if task is not None:
            first = self.first_active.get(task.pk)
            if first is not None and (job.run.scheduled_for, job.run.pk) > first:
                return self._skip(job, queueorder.overlap_text(task))
            if blocked := self.limits.task_blocked(task):
                self.capped_tasks[task.pk] = blocked
                return self._skip(job, blocked)
        if blocked := self.limits.spider_blocked(project_id, job.spider):
            self.capped_spiders[(project_id, job.spider)] = blocked
            return self._skip(job, blocked)
        matching = matching_nodes(job, self.fleet)
        if not matching:
            selected = self.fleet.selected_nodes.get(task.pk, set()) if task else set()
            names = [self.node_names.get(pk, f"#{pk}") for pk in selected]
            return self._skip(job, queueorder.no_node_text(job, task, names))
        allowed = [n for n in matching if not self.limits.node_blocked(n)]
        if not allowed:
            return self._skip(job, self.limits.node_blocked(matching[0]))
        node = pick_node(prefer_nodes(job, allowed, self.fleet), self.fleet.loads)
        if node is None:
            return self._skip(job, queueorder.busy_text(allowed))
        self._place(job, node)
        return Verdict.PLACED

    def _skip(self, job: Job, reason: str) -> Verdict:
        self.reasons[reason].append(job.pk)
        return Verdict.SKIP

    def _place(self, job: Job, node: Node) -> None:
        token = job.issue_report_token()
        job.state = Job.State.DISPATCHING
        job.node = node
        job.dispatched_at = self.now
        job.log_url = job.log_url_on(node)
        job.updated_at = self.now
        job.waiting_reason = ""
        self.fleet.loads[node.pk] += 1
        if job.run.crawl_id:
            self.fleet.run_nodes[job.run_id].add(node.pk)
        before = {t for t in node.tags or () if t in self.limits.tag_caps}
        self.limits.took(job, node)
        self.placements.append(Placement(job, node, token))
        if before and self.limits.node_blocked(node):
            self._refresh_free()  # a tag reached its cap: its nodes' free slots are gone
        else:
            self.fleet.free -= 1

    def _refresh_free(self) -> None:
        """Free slots on nodes no tag cap blocks."""
        self.fleet.free = sum(
            max(0, n.capacity - self.fleet.loads[n.pk])
            for n in self.fleet.nodes
            if not self.limits.node_blocked(n)
        )

    # --- why the others wait -----------------------------------------------------------------
    def note_reasons(self) -> None:
        """One UPDATE per distinct reason, writing only rows whose reason changes."""
        noted: list[int] = []
        for reason, ids in self.reasons.items():
            _note(Job.objects.filter(pk__in=ids, state=Job.State.QUEUED), reason)
            noted += ids
        groups = [
            *((Q(task_id=pk), text) for pk, text in self.capped_tasks.items()),
            *((Q(project_id=p, spider=s), text) for (p, s), text in self.capped_spiders.items()),
            *((Q(project_id=pk), text) for pk, text in self.capped_projects.items()),
        ]
        for where, text in groups:
            _note(_due(self.horizon).filter(where).exclude(pk__in=noted), text)
        if self.fleet.free > 0:
            return
        # Slots ran out: the jobs not reached wait for them.
        rest = _due(self.horizon).exclude(pk__in=noted + [p.job.pk for p in self.placements])
        for where, _ in groups:
            rest = rest.exclude(where)
        _note(rest, queueorder.FLEET_FULL.format(slots=self.fleet.capacity))


def _note(jobs, reason: str) -> int:
    return jobs.exclude(waiting_reason=reason).update(waiting_reason=reason)


def note_idle_fleet(now: datetime, fleet: _Fleet | None) -> None:
    """No planning pass (no node up, or every slot busy): say so on the jobs that need it.

    With every slot busy only jobs never noted are written (recent ones, an index range), so a
    full fleet costs one cheap statement per tick however long the queue."""
    if fleet is None:
        _note(_due(now), queueorder.NO_NODE_UP)
        return
    fresh = _due(now).filter(created_at__gte=queueorder.recent(now), waiting_reason="")
    _note(fresh, queueorder.FLEET_FULL.format(slots=fleet.capacity))
