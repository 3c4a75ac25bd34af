"""The events a job raises as it ends (see :mod:`controlplane.events`).

Called inside the transaction that moves the job, by the one caller whose conditional update
won, so each event is queued exactly once and never without its state change.
"""

from __future__ import annotations

from controlplane import events
from controlplane.jobs.models import Job


def raise_breaches(job: Job) -> None:
    """One monitor_breached event per job, naming every rule it broke."""
    breaches = (job.monitor_report or {}).get("breaches") or []
    if breaches:
        events.raise_event(
            events.MONITOR_BREACHED,
            f"{job.spider} (job {job.pk}) broke a monitor: "
            + "; ".join(b["message"] for b in breaches),
            detail={"breaches": breaches, "state": job.state},
            project_id=job.project_id,
            task_id=job.task_id,
            job_id=job.pk,
            run_id=job.run_id,
        )


def raise_job_events(job: Job) -> None:
    """The events of a job that just ended (called inside the transaction that ended it)."""
    if job.state in Job.RETRYABLE:
        node = job.node.name if job.node_id and job.node else "no node"
        events.raise_event(
            events.JOB_FAILED,
            f"{job.spider} (job {job.pk}, attempt {job.attempt}) {job.state} on {node}: "
            f"{job.reason}",
            detail={"state": job.state, "cause": job.cause, "attempt": job.attempt},
            project_id=job.project_id,
            task_id=job.task_id,
            node_id=job.node_id,
            job_id=job.pk,
            run_id=job.run_id,
        )
    if job.cause == "monitor":  # a stall's breach was raised when the job was stopped
        raise_breaches(job)
