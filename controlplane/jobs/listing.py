"""Which jobs and runs a list shows: one set of filters for every face (REST API, dashboard).

Filters are plain values (names, states, times); the faces parse their own query strings into a
:class:`JobFilters` or :class:`RunFilters` and page the result themselves. Unknown states are
refused with the field they came in, before any query runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db.models import Prefetch, QuerySet

from controlplane import keyset
from controlplane.jobs.models import Job
from controlplane.refusals import Refused
from controlplane.scheduling.models import TaskRun


def check_states(states: Iterable[str], known: Iterable[str], name: str = "state") -> list[str]:
    """``states`` without blanks; Refused (422, on ``name``) if any is unknown."""
    wanted = [s.strip() for s in states if s and s.strip()]
    known = list(known)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise Refused(
            f"unknown state(s) {', '.join(unknown)}; known: {', '.join(known)}",
            fields={name: [f"unknown: {', '.join(unknown)}"]},
        )
    return wanted


@dataclass
class JobFilters:
    """Empty values filter nothing. ``task`` and ``node`` are names; times bound ``created_at``."""

    states: list[str] = field(default_factory=list)
    active: bool | None = None
    project: str = ""
    spider: str = ""
    task: str = ""
    node: str = ""
    run: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def jobs_for_listing() -> QuerySet[Job]:
    """Jobs with everything a list row shows (task and node names), in one query."""
    return Job.objects.select_related("task", "node")


def filter_jobs(filters: JobFilters, jobs: QuerySet[Job] | None = None) -> QuerySet[Job]:
    jobs = jobs_for_listing() if jobs is None else jobs
    states = check_states(filters.states, Job.State.values)
    if states:
        jobs = jobs.filter(state__in=states)
    if filters.active is not None:
        active = Job.ACTIVE
        jobs = jobs.filter(state__in=active) if filters.active else jobs.exclude(state__in=active)
    if filters.project:
        jobs = jobs.filter(project__name=filters.project)
    if filters.spider:
        jobs = jobs.filter(spider=filters.spider)
    if filters.task:
        jobs = jobs.filter(task__name=filters.task)
    if filters.node:
        jobs = jobs.filter(node__name=filters.node)
    if filters.run is not None:
        jobs = jobs.filter(run_id=filters.run)
    if filters.created_from is not None:
        jobs = jobs.filter(created_at__gte=filters.created_from)
    if filters.created_to is not None:
        jobs = jobs.filter(created_at__lt=filters.created_to)
    return jobs


def job_querysets(filters: JobFilters, jobs: QuerySet[Job] | None = None) -> list[QuerySet[Job]]:
    """:func:`filter_jobs`, as one queryset per state when several are wanted.

    Each is ordered by an index on ``(state, ..., created_at, id)``; :func:`job_page` merges
    their pages instead of sorting every match of ``state IN (...)``.
    """
    states = check_states(filters.states, Job.State.values)
    if len(states) < 2:
        return [filter_jobs(filters, jobs)]
    return [filter_jobs(replace(filters, states=[state]), jobs) for state in states]


def job_page(
    filters: JobFilters,
    cursor: str | None,
    size: int = keyset.DEFAULT_PAGE_SIZE,
    jobs: QuerySet[Job] | None = None,
) -> keyset.Page:
    """The matching jobs after ``cursor``, newest first: the job list of every face (the
    dashboard's and the REST API's), an index range scan however deep."""
    return keyset.merged_page(job_querysets(filters, jobs), "created_at", cursor, size)


@dataclass
class RunFilters:
    """Empty values filter nothing. ``task`` is a name; times bound ``scheduled_for``."""

    states: list[str] = field(default_factory=list)
    task: str = ""
    trigger: str = ""
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None


def filter_runs(filters: RunFilters, runs: QuerySet[TaskRun] | None = None) -> QuerySet[TaskRun]:
    runs = TaskRun.objects.select_related("task") if runs is None else runs
    states = check_states(filters.states, TaskRun.State.values)
    if states:
        runs = runs.filter(state__in=states)
    if filters.trigger:
        check_states([filters.trigger], TaskRun.Trigger.values, "trigger")
        runs = runs.filter(trigger=filters.trigger)
    if filters.task:
        runs = runs.filter(task__name=filters.task)
    if filters.scheduled_from is not None:
        runs = runs.filter(scheduled_for__gte=filters.scheduled_from)
    if filters.scheduled_to is not None:
        runs = runs.filter(scheduled_for__lt=filters.scheduled_to)
    return runs


def run_querysets(filters: RunFilters) -> list[QuerySet[TaskRun]]:
    """:func:`filter_runs`, as one queryset per state when several are wanted."""
    states = check_states(filters.states, TaskRun.State.values)
    if len(states) < 2:
        return [filter_runs(filters)]
    return [filter_runs(replace(filters, states=[state])) for state in states]


def with_jobs(runs: QuerySet[TaskRun]) -> QuerySet[TaskRun]:
    """Runs with their jobs (and the jobs' nodes) fetched in one more query for the whole page,
    so ``completion.progress(run)`` needs no query per run."""
    jobs = (
        Job.objects.select_related("node", "task")
        .defer("stats", "args", "settings", "avoid_nodes")
        .order_by("shard", "attempt", "pk")
    )
    return runs.prefetch_related(Prefetch("jobs", queryset=jobs))


def attempt_chain(job: Job) -> list[Job]:
    """Every attempt of ``job``'s shard of its run, first to latest, with their nodes.

    Attempts are linked by ``retry_of``; all of them share the run and the shard, so one query
    finds the chain, ordered the way the links run.
    """
    attempts = list(
        Job.objects.filter(run_id=job.run_id, shard=job.shard)
        .select_related("node")
        .order_by("attempt", "pk")
    )
    by_parent = {a.retry_of_id: a for a in attempts if a.retry_of_id is not None}
    firsts = [a for a in attempts if a.retry_of_id is None]
    chain: list[Job] = []
    for first in firsts:  # normally one; an operator's run of the same shard would start another
        current: Job | None = first
        while current is not None and current not in chain:
            chain.append(current)
            current = by_parent.get(current.pk)
    chain += [a for a in attempts if a not in chain]  # nothing is hidden if a link is missing
    return chain
