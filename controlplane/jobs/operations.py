"""What an operator (dashboard, API, admin) can do to a job: cancel it, retry it now. Audited.

Both are safe to call from any process at any time: state changes go through conditional
updates, so an operator racing a poller or a dispatcher never leaves a job half-changed.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from controlplane.accounts import audit
from controlplane.jobs.models import Job
from controlplane.jobs.outcome import CANCEL_OPERATOR
from controlplane.jobs.retry import create_retry
from controlplane.lib.scrapyd import ScrapydError
from controlplane.scheduling.models import TaskRun

logger = logging.getLogger(__name__)

RETRYABLE_BY_OPERATOR = (*Job.RETRYABLE, Job.State.CANCELLED)


class OperationError(Exception):
    """The job is not in a state that allows the operation; the message says why."""


def cancel_job(
    job: Job, reason: str = "", actor: audit.Actor | None = None, *, force: bool = False
) -> str:
    """Stop a job; returns what happened, in words.

    A queued job is cancelled at once. A job on a node gets ``cancel_requested`` first (so a
    poller that finds it gone calls it cancelled, not lost, and its heartbeat reply tells the
    spider to stop), then ``cancel.json``: a pending job leaves the node's queue and is cancelled;
    a running one shuts down gracefully and is recorded as cancelled when it ends. If the node
    cannot be reached now, the poller stops the job when the node is back.
    """
    job.refresh_from_db()
    if job.is_final:
        raise OperationError(f"job {job.pk} has already ended ({job.state})")
    reason = reason or (f"{CANCEL_OPERATOR} ({actor})" if actor else CANCEL_OPERATOR)
    if force:
        # Mark it stopping first (so a poller calls it cancelled, not lost), then kill it.
        first = _cancel(job, reason) if not job.cancel_requested else ""
        job.refresh_from_db()
        outcome = first if job.is_final else _kill(job)
    else:
        outcome = _cancel(job, reason)
    audit.record(
        actor, "job.cancel", f"job {job.pk}", spider=job.spider, outcome=outcome, force=force
    )
    return outcome


def _kill(job: Job) -> str:
    """A second, forced cancel: the crawl gets SIGKILL now instead of a graceful shutdown."""
    node = job.node
    if node is None or job.state not in Job.ON_NODE:
        return "a stop was already requested"
    try:
        node.client().cancel(job.project.name, job.scrapyd_job_id, signal="KILL")
    except ScrapydError as exc:
        return f"kill not delivered to {node.name}: {exc}; the poller will stop it"
    return f"killed on {node.name}"


def _cancel(job: Job, reason: str) -> str:
    if job.state == Job.State.QUEUED and job.transition(
        [Job.State.QUEUED],
        Job.State.CANCELLED,
        cancel_requested=True,
        reason=reason,
        cause="cancelled",
    ):
        return "cancelled before it was dispatched"
    won = (
        Job.objects.filter(pk=job.pk, state__in=Job.ON_NODE, cancel_requested=False).update(
            cancel_requested=True, reason=reason[:2000], updated_at=timezone.now()
        )
        == 1
    )
    job.refresh_from_db()
    if job.is_final:
        return f"it ended meanwhile ({job.state})"
    if not won:
        return "a stop was already requested"
    node = job.node
    if node is None:
        return "cancel requested"
    try:
        prevstate = node.client().cancel(job.project.name, job.scrapyd_job_id)
    except ScrapydError as exc:
        logger.warning("cancel of job %s on %s not delivered: %s", job.pk, node.name, exc)
        return f"cancel requested; {node.name} did not answer, the poller will stop it"
    if prevstate == "pending" and job.transition(
        [Job.State.DISPATCHING, Job.State.PENDING], Job.State.CANCELLED, cause="cancelled"
    ):
        return f"removed from {node.name}'s queue"
    if prevstate == "running":
        return f"stopping on {node.name}"
    return "cancel requested"


def retry_now(job: Job, actor: audit.Actor | None = None) -> Job:
    """A new attempt of an ended job, dispatched as soon as possible.

    This is an operator's decision, so ``max_attempts`` does not apply. If an automatic retry is
    already waiting out its backoff, that one is started now instead of adding another.
    """
    job.refresh_from_db()
    if job.state not in RETRYABLE_BY_OPERATOR:
        raise OperationError(f"job {job.pk} is {job.state}; only ended, unsuccessful jobs retry")
    existing = Job.objects.filter(retry_of=job).first()
    if existing is not None:
        if existing.state == Job.State.QUEUED:
            Job.objects.filter(pk=existing.pk, state=Job.State.QUEUED).update(
                not_before=None, updated_at=timezone.now()
            )
            existing.refresh_from_db()
            audit.record(actor, "job.retry", f"job {job.pk}", retry=existing.pk)
            return existing
        raise OperationError(f"job {job.pk} was already retried as job {existing.pk}")
    # The run may have been closed as failed or cancelled; it is open again while this runs.
    TaskRun.objects.filter(pk=job.run_id).exclude(state=TaskRun.State.ACTIVE).update(
        state=TaskRun.State.ACTIVE, finished_at=None, reason=f"reopened to retry job {job.pk}"
    )
    retry = create_retry(
        job,
        not_before=None,
        reason=f"retried by an operator after attempt {job.attempt} ({job.state}: {job.reason})",
    )
    if retry is None:
        existing = Job.objects.filter(retry_of=job).first()
        if existing is None:  # pragma: no cover - the unique constraint failed for another reason
            raise OperationError(f"could not retry job {job.pk}")
        return existing
    logger.info("job %s retried by an operator as job %s", job.pk, retry.pk)
    audit.record(actor, "job.retry", f"job {job.pk}", retry=retry.pk)
    return retry
