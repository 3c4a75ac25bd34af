"""A TaskRun's state and progress, derived from its jobs.

A run has one or more shards (``fanout``); each shard has a chain of attempts. The latest attempt
of each shard decides:

* while any shard's latest attempt is active, or ended unsuccessfully with an automatic retry
  still to come, the run is active;
* then it is **failed** if any shard's latest attempt failed, was lost or timed out (no retry
  left), **cancelled** if any was cancelled, and **succeeded** otherwise.

Closing a run is a conditional update, so among several pollers one closes it and only that one
acts on it: the tasks that run after it are started in the same transaction
(:mod:`controlplane.jobs.chains`), and a fan-out run's Redis keys are deleted (the workers delete
them themselves when a crawl finishes; this catches crawls whose workers were killed, cancelled
or lost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import events
from controlplane.jobs import chains
from controlplane.jobs.models import Job
from controlplane.jobs.retry import will_retry
from controlplane.scheduling.models import TaskRun
from crawler.sharedkeys import DEFAULT_KEY_PREFIX, crawl_key_base

logger = logging.getLogger(__name__)


def latest_attempts(jobs: list[Job]) -> dict[int, Job]:
    """shard -> its latest attempt."""
    latest: dict[int, Job] = {}
    for job in jobs:
        current = latest.get(job.shard)
        if current is None or (job.attempt, job.pk) > (current.attempt, current.pk):
            latest[job.shard] = job
    return latest


def evaluate(run: TaskRun, jobs: list[Job] | None = None) -> tuple[str, str] | None:
    """(state, reason) the run should be closed with, or None while it is still going."""
    jobs = list(run.jobs.all()) if jobs is None else jobs
    if not jobs:
        return None
    latest = latest_attempts(jobs)
    for job in latest.values():
        job.run = run  # the policy lookup needs run.task; avoid a query per job
        if job.state in Job.ACTIVE or will_retry(job):
            return None
    unsuccessful = [j for j in latest.values() if j.state in Job.RETRYABLE]
    if unsuccessful:
        parts = [
            f"shard {j.shard} attempt {j.attempt} {j.state}: {j.reason}"[:300]
            for j in sorted(unsuccessful, key=lambda j: j.shard)
        ]
        return TaskRun.State.FAILED, "; ".join(parts)
    cancelled = [j for j in latest.values() if j.state == Job.State.CANCELLED]
    if cancelled:
        return TaskRun.State.CANCELLED, f"{len(cancelled)} of {len(latest)} shard(s) cancelled"
    attempts = sum(j.attempt for j in latest.values())
    degraded = [j for j in latest.values() if j.state == Job.State.DEGRADED]
    if degraded:
        parts = [
            f"shard {j.shard}: {j.reason}"[:300] for j in sorted(degraded, key=lambda j: j.shard)
        ]
        return TaskRun.State.DEGRADED, "; ".join(parts)
    return TaskRun.State.SUCCEEDED, f"{len(latest)} shard(s) succeeded in {attempts} attempt(s)"


def close_run(run: TaskRun, state: str, reason: str) -> bool:
    """Close an active run; True if this call did it (and cleaned up after it). The close, its
    event (a failed or degraded run) and the runs of the tasks chained after it are committed
    together."""
    with transaction.atomic():
        won = (
            TaskRun.objects.filter(pk=run.pk, state=TaskRun.State.ACTIVE).update(
                state=state, reason=reason[:4000], finished_at=timezone.now()
            )
            == 1
        )
        if won:
            run.state, run.reason = state, reason
            raise_run_event(run)
            chains.start_downstream(run)
    if not won:
        return False
    logger.info("run %s %s: %s", run.pk, state, reason)
    if run.crawl_id:
        try:
            purge_shared_crawl(run)
        except Exception:
            logger.exception("could not delete the Redis keys of crawl %s", run.crawl_id)
    return True


def raise_run_event(run: TaskRun) -> None:
    kind = {
        TaskRun.State.FAILED: events.RETRIES_EXHAUSTED,
        TaskRun.State.DEGRADED: events.RUN_DEGRADED,
    }.get(run.state)
    if kind is None:
        return
    name = str(run.task) if run.task_id else "a run outside any task"
    words = "failed with no retry left" if kind == events.RETRIES_EXHAUSTED else "is degraded"
    project_id = run.task.project_id if run.task_id else None
    if project_id is None:
        project_id = run.jobs.values_list("project_id", flat=True).first()
    events.raise_event(
        kind,
        f"{name} (run {run.pk}) {words}: {run.reason}",
        detail={"state": run.state, "trigger": run.trigger},
        project_id=project_id,
        task_id=run.task_id,
        run_id=run.pk,
    )


def sweep(limit: int = 500) -> int:
    """Close every active run whose jobs have all ended; returns how many were closed."""
    runs = (
        TaskRun.objects.filter(state=TaskRun.State.ACTIVE, jobs__isnull=False)
        .exclude(jobs__state__in=Job.ACTIVE)
        .select_related("task")
        .distinct()
        .order_by("pk")[:limit]
    )
    closed = 0
    for run in runs:
        verdict = evaluate(run)
        if verdict is not None and close_run(run, *verdict):
            closed += 1
    return closed


# --- fan-out ----------------------------------------------------------------------------------
@dataclass
class Progress:
    """How far a run has come; for fan-out runs, summed over every shard and attempt."""

    items: int = 0
    pages: int = 0
    errors: int = 0
    shards: int = 0
    shards_done: int = 0
    shards_active: int = 0
    per_shard: list[dict[str, Any]] = field(default_factory=list)


def progress(run: TaskRun) -> Progress:
    """Items, pages and errors of a run.

    In a fan-out run all workers share one Redis queue, so what a lost or failed worker crawled
    is not crawled again by its retry: every attempt's numbers count. In a single-shard run a
    retry starts over, so only the latest attempt counts.
    """
    jobs = list(run.jobs.all())
    latest = latest_attempts(jobs)
    counted = jobs if run.crawl_id else list(latest.values())
    result = Progress(shards=len(latest))
    result.items = sum(j.items for j in counted)
    result.pages = sum(j.pages for j in counted)
    result.errors = sum(j.errors for j in counted)
    for shard, job in sorted(latest.items()):
        attempts = [j for j in jobs if j.shard == shard] if run.crawl_id else [job]
        if job.state in Job.ACTIVE:
            result.shards_active += 1
        elif job.state in Job.SUCCESSFUL:
            result.shards_done += 1
        result.per_shard.append(
            {
                "shard": shard,
                "job": job.pk,
                "attempt": job.attempt,
                "state": job.state,
                "node": job.node_id,
                "items": sum(j.items for j in attempts),
                "pages": sum(j.pages for j in attempts),
                "errors": sum(j.errors for j in attempts),
            }
        )
    return result


def _redis_url(run: TaskRun) -> str:
    if settings.CRAWLFLEET_REDIS_URL:
        return settings.CRAWLFLEET_REDIS_URL
    for job in run.jobs.all()[:1]:
        return str(job.settings.get("REDIS_URL", "") or "")
    return ""


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def purge_shared_crawl(run: TaskRun) -> int:
    """Delete every Redis key of a fan-out run's crawl; returns how many were deleted.

    Keys are ``<prefix>:{<spider>:<crawl_id>}:<name>`` (see crawler/redis_keys.py); they are
    found by pattern, so keys a future scrapy-redis version adds under the crawl go too.
    """
    url = _redis_url(run)
    first = run.jobs.order_by("pk").first()
    if not url or first is None or not run.crawl_id:
        return 0
    import redis  # only control planes with fan-out runs need it

    prefix = str(first.settings.get("SHARED_KEY_PREFIX") or DEFAULT_KEY_PREFIX)
    base = crawl_key_base(prefix, first.spider, run.crawl_id)
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = list(client.scan_iter(match=_glob_escape(base) + "*", count=500))
        deleted = int(client.delete(*keys)) if keys else 0
    finally:
        client.close()
    if deleted:
        logger.info("deleted %s Redis key(s) of crawl %s", deleted, run.crawl_id)
    return deleted
