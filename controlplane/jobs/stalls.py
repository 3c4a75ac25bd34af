"""Stuck crawls: alive (still heartbeating) but no longer getting anywhere.

A ``stall`` monitor rule names how long a running job's items and pages may stay flat. The
poller asks :func:`find_stall` about each running job it watches; the answer comes from the
job's progress samples (one per heartbeat, :mod:`controlplane.jobs.samples`): the plateau
started at the first sample showing the current figures. A job that stops heartbeating is not
a stall; the heartbeat timeout deals with it.

The rules of a task are read at most every :data:`RULES_TTL` seconds per poller, so watching
running jobs adds no query per cycle for tasks without a stall rule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from controlplane.jobs.judging import breach_entry
from controlplane.jobs.models import Job, JobSample
from controlplane.monitors.models import MonitorRule, effective_rules
from controlplane.monitors.rules import n

RULES_TTL = 30.0
_rules: dict[tuple[int, int | None], tuple[float, MonitorRule | None]] = {}


@dataclass(frozen=True)
class Stall:
    rule: MonitorRule
    seconds: float
    message: str

    def report(self, job: Job) -> dict:
        figures = {"seconds": round(self.seconds), "items": job.items, "pages": job.pages}
        return {"breaches": [breach_entry(self.rule, self.message, figures)]}


def stall_rule(project_id: int, task_id: int | None) -> MonitorRule | None:
    key = (project_id, task_id)
    cached = _rules.get(key)
    if cached is not None and time.monotonic() - cached[0] < RULES_TTL:
        return cached[1]
    found = next((r for r in effective_rules(project_id, task_id) if r.kind == "stall"), None)
    _rules[key] = (time.monotonic(), found)
    return found


def flat_since(job: Job) -> datetime | None:
    """When the job's items and pages last changed: the first sample with today's figures."""
    changed = (
        JobSample.objects.filter(job_id=job.pk)
        .exclude(items=job.items, pages=job.pages)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    plateau = JobSample.objects.filter(job_id=job.pk, items=job.items, pages=job.pages)
    if changed is not None:
        plateau = plateau.filter(at__gt=changed)
    return plateau.order_by("at").values_list("at", flat=True).first()


def find_stall(job: Job, now: datetime) -> Stall | None:
    """The broken stall rule of a running job, or None."""
    rule = stall_rule(job.project_id, job.task_id)
    if rule is None or job.last_heartbeat is None:
        return None
    limit = rule.params["seconds"]
    since = flat_since(job)
    if since is None:
        return None
    # Measured up to the last heartbeat: a silent job is hung, which is another check's call.
    flat = (job.last_heartbeat - since).total_seconds()
    if flat <= limit:
        return None
    message = (
        f"no new items or pages for {n(flat)} s (limit {n(limit)} s): "
        f"stuck at {n(job.items)} items, {n(job.pages)} pages"
    )
    return Stall(rule=rule, seconds=flat, message=message)
