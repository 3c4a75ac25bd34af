"""Automatic retries of failed, lost and timed-out jobs.

A retry is a new Job (attempt + 1) pointing at the attempt it replaces through the unique
``retry_of`` one-to-one, so however many pollers see a failure, one retry row can exist. It waits
``retry_backoff * retry_backoff_factor ** (attempt - 1)`` seconds (``not_before``) and lists the
failed attempt's node in ``avoid_nodes``, which the dispatcher honours while other nodes can
take the job.

A *lost* attempt may still be alive: a killed Scrapyd leaves its crawl processes running. Its
retry is held back while there is evidence that the old process runs (it still heartbeats, or
its node's exit records say the pid is alive); the spider is told to stop by its next heartbeat
reply. If it has not stopped after ``CRAWLFLEET_HEARTBEAT_TIMEOUT`` the retry goes ahead and says
so in its ``reason``: a retry never runs beside a live orphan without that being recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.lib.scrapyd import ScrapydError
from controlplane.nodes.models import Node
from controlplane.scheduling.models import TaskRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobPolicy:
    """A task's recovery settings; runs outside any task get their project's."""

    max_attempts: int = 1
    retry_backoff: float = 30.0
    retry_backoff_factor: float = 2.0
    error_threshold: int = 0
    max_runtime: int | None = None


def policy_for(job: Job) -> JobPolicy:
    task = job.run.task or job.project
    return JobPolicy(
        max_attempts=task.max_attempts,
        retry_backoff=task.retry_backoff,
        retry_backoff_factor=task.retry_backoff_factor,
        error_threshold=task.error_threshold,
        max_runtime=task.max_runtime,
    )


def backoff_delay(policy: JobPolicy, attempt: int) -> float:
    """Seconds between the end of ``attempt`` and the start of the next one."""
    return policy.retry_backoff * policy.retry_backoff_factor ** max(0, attempt - 1)


def will_retry(job: Job, policy: JobPolicy | None = None) -> bool:
    """Whether this ended attempt gets (or already got) an automatic retry."""
    policy = policy or policy_for(job)
    return job.state in Job.RETRYABLE and job.attempt < policy.max_attempts


def orphan_quiet_period() -> float:
    """How long a lost job must be silent before its process is presumed gone."""
    return max(3 * settings.CRAWLFLEET_SPIDER_HEARTBEAT, 2 * settings.CRAWLFLEET_POLL_INTERVAL)


@dataclass(frozen=True)
class OrphanCheck:
    """What is known about the process of a lost attempt."""

    alive: str | None = None  # evidence that it still runs
    unknown: str | None = None  # why nobody can tell


def check_orphan(job: Job, now: datetime | None = None) -> OrphanCheck:
    """Whether the process of lost ``job`` may still be running.

    The node's exit records are the best evidence (pid alive or not); without them, heartbeats:
    heartbeats of a job already declared lost are answered "stop" but not recorded, so one that
    was heartbeating when it was declared lost counts as alive until it reports its end.
    """
    if job.state != Job.State.LOST or job.reported_final:
        return OrphanCheck()  # the final report is sent as the crawl closes
    now = now or timezone.now()
    node = job.node
    unknown = "its node was removed"
    if node is not None and node.state == Node.State.DOWN:
        unknown = f"{node.name} is unreachable"
    elif node is not None:
        client = node.client(timeout=min(settings.CRAWLFLEET_NODE_TIMEOUT, 2.0))
        try:
            payload = client.get("jobexits.json", job=job.scrapyd_job_id, limit=1)
        except ScrapydError as exc:
            unknown = (
                f"{node.name} {'is unreachable' if exc.unreachable else 'keeps no exit records'}"
            )
        else:
            for record in payload.get("exits", []):
                if record.get("pid_alive"):
                    pid = record.get("pid")
                    return OrphanCheck(alive=f"its process {pid} is still alive on {node.name}")
                return OrphanCheck()
            unknown = f"{node.name} has no record of its process"
    quiet = timedelta(seconds=orphan_quiet_period())
    beat = job.last_heartbeat
    if beat and now - beat < quiet:
        return OrphanCheck(alive=f"it heartbeated {int((now - beat).total_seconds())} s ago")
    if beat and job.finished_at and job.finished_at - beat < quiet:
        return OrphanCheck(
            alive="it was heartbeating when declared lost and never reported its end"
        )
    return OrphanCheck(unknown=unknown)


def create_retry(job: Job, *, not_before: datetime | None, reason: str = "") -> Job | None:
    """Insert the next attempt of ``job``; None if one already exists (someone else won)."""
    retry = Job(
        run_id=job.run_id,
        task_id=job.task_id,
        attempt=job.attempt + 1,
        retry_of=job,
        shard=job.shard,
        project_id=job.project_id,
        spider=job.spider,
        version_id=job.version_id,
        args=dict(job.args),
        settings=dict(job.settings),
        priority=job.priority,
        # Its place in the queue too: a failed attempt does not send its run to the back.
        queue_rank=job.queue_rank,
        chain_id=job.chain_key,
        avoid_nodes=sorted({*(job.avoid_nodes or []), *([job.node_id] if job.node_id else [])}),
        not_before=not_before,
        reason=reason[:2000],
    )
    try:
        with transaction.atomic():
            retry.save()
    except IntegrityError:
        return None
    return retry


def maybe_retry(job: Job, now: datetime | None = None) -> Job | None:
    """Schedule the automatic retry of an ended attempt if the policy and the evidence allow."""
    now = now or timezone.now()
    if job.state not in Job.RETRYABLE or Job.objects.filter(retry_of=job).exists():
        return None
    if not TaskRun.objects.filter(pk=job.run_id, state=TaskRun.State.ACTIVE).exists():
        return None
    policy = policy_for(job)
    if not will_retry(job, policy):
        return None
    ended = job.finished_at or now
    note = f"retry of attempt {job.attempt} ({job.state}: {job.reason})"
    orphan = check_orphan(job, now)
    if orphan.alive:
        if now - ended < timedelta(seconds=settings.CRAWLFLEET_HEARTBEAT_TIMEOUT):
            logger.info("retry of job %s held: its process still runs (%s)", job.pk, orphan.alive)
            return None
        note += (
            f"; attempt {job.attempt} had not stopped when this retry was created ({orphan.alive})"
        )
    elif orphan.unknown and job.last_heartbeat is None:
        # A spider that never heartbeated cannot be told to stop; say the old one may run.
        note += f"; attempt {job.attempt} may still be running ({orphan.unknown})"
    not_before = max(now, ended + timedelta(seconds=backoff_delay(policy, job.attempt)))
    retry = create_retry(job, not_before=not_before, reason=note)
    if retry is not None:
        logger.info(
            "job %s (%s) will be retried as job %s, attempt %s, from %s",
            job.pk,
            job.state,
            retry.pk,
            retry.attempt,
            not_before.isoformat(timespec="seconds"),
        )
    return retry


def sweep(now: datetime | None = None, limit: int = 500) -> int:
    """Retry every ended attempt that should be and is not yet; returns how many were created.

    The poller that ends a job retries it at once; this catches retries held back for a live
    orphan and any a crashed poller did not get to.
    """
    now = now or timezone.now()
    candidates = (
        Job.objects.filter(
            state__in=Job.RETRYABLE,
            retried_by__isnull=True,
            run__state=TaskRun.State.ACTIVE,
        )
        .filter(
            Q(run__task__isnull=False, attempt__lt=F("run__task__max_attempts"))
            # Runs outside any task follow their project's policy.
            | Q(run__task__isnull=True, attempt__lt=F("project__max_attempts"))
        )
        .select_related("run__task", "node", "project")
        .order_by("finished_at")[:limit]
    )
    return sum(maybe_retry(job, now) is not None for job in candidates)
