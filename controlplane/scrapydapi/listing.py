"""The fleet's jobs in Scrapyd's shapes: what listjobs.json, status.json and /jobs show.

A Scrapyd client knows a job by the id it was scheduled with. A failed attempt that crawlfleet
retries on another node is a new Job row with a new node-side id, so the face shows each *chain*
of attempts once, under its first id (``Job.chain_key``), in the state of its latest attempt.
Queries are bounded: active jobs, plus the newest ``CRAWLFLEET_SCRAPYD_FINISHED_TO_KEEP`` ended
chains, as Scrapyd keeps ``finished_to_keep``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text

PENDING_STATES = (Job.State.QUEUED, Job.State.DISPATCHING, Job.State.PENDING)


def latest_attempts(project: str | None = None) -> QuerySet[Job]:
    """Jobs that were not retried: the current attempt of every chain."""
    jobs = (
        Job.objects.filter(retried_by__isnull=True)
        .select_related("project", "version")
        .defer("version__egg")  # eggs are megabytes: never load them for a listing
    )
    return jobs.filter(project__name=project) if project else jobs


def scrapyd_state(job: Job) -> str:
    if job.state in PENDING_STATES:
        return "pending"
    return "running" if job.state == Job.State.RUNNING else "finished"


def find_chain(job_id: str, project: str | None = None) -> Job | None:
    """The latest attempt of the chain a client knows as ``job_id``."""
    jobs = latest_attempts(project).filter(Q(chain_id=job_id) | Q(scrapyd_job_id=job_id))
    return jobs.order_by("-attempt").first()


def local_time(value: datetime | None) -> str | None:
    """Scrapyd's format: ``str()`` of a naive local datetime."""
    return str(timezone.localtime(value).replace(tzinfo=None)) if value else None


def log_path(job: Job) -> str:
    """Where this face serves the job's log (relative to the API's root), as Scrapyd's log_url."""
    return f"/logs/{job.project.name}/{job.spider}/{job.chain_key}.log"


def cached_listing(project: str | None, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """:func:`listing`, shared for ``CRAWLFLEET_SCRAPYD_LISTING_CACHE`` seconds per process.

    Clients such as ScrapydWeb poll ``listjobs.json`` every few seconds, often several at once:
    within the window they all get one answer, so the database sees one query set per window
    and web process, however many clients poll.
    """
    ttl = settings.CRAWLFLEET_SCRAPYD_LISTING_CACHE
    if ttl <= 0:
        return listing(project, prefix)
    key = f"scrapydapi:listjobs:{project or ''}:{prefix}"
    found = cache.get(key)
    if found is None:
        found = listing(project, prefix)
        cache.set(key, found, ttl)
    return found


def listing(project: str | None, prefix: str) -> dict[str, list[dict[str, Any]]]:
    jobs = latest_attempts(project)
    now = timezone.now()
    active = list(jobs.filter(state__in=Job.ACTIVE).order_by("created_at", "pk"))
    keep = settings.CRAWLFLEET_SCRAPYD_FINISHED_TO_KEEP
    ended = list(jobs.filter(state__in=Job.FINAL).order_by("-finished_at", "-pk")[:keep])
    pending = [
        {
            "id": job.chain_key,
            "project": job.project.name,
            "spider": job.spider,
            "version": job.version.version,
            "settings": job.settings,
            "args": job.args,
            # Not Scrapyd's: why it has not started yet ("" once it is on its node).
            "waiting_reason": waiting_text(job, now=now),
        }
        for job in active
        if job.state in PENDING_STATES
    ]
    running = [
        {
            "id": job.chain_key,
            "project": job.project.name,
            "spider": job.spider,
            "pid": job.pid,
            "start_time": local_time(job.started_at or job.dispatched_at),
            "log_url": prefix + log_path(job),
            "items_url": None,
        }
        for job in active
        if job.state == Job.State.RUNNING
    ]
    finished = [
        {
            "id": job.chain_key,
            "project": job.project.name,
            "spider": job.spider,
            "start_time": local_time(job.started_at or job.created_at),
            "end_time": local_time(job.finished_at),
            "log_url": prefix + log_path(job) if job.node_id else None,
            "items_url": None,
        }
        for job in reversed(ended)  # oldest first, as Scrapyd lists them
    ]
    return {"pending": pending, "running": running, "finished": finished}
