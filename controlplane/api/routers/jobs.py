"""Jobs: list with filters, details with stats and log URL, cancel and retry."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Status

from controlplane.api.auth import OPERATOR, VIEWER
from controlplane.api.errors import ApiError, not_found
from controlplane.api.schemas import JobActionOut, JobDetailOut, JobListOut
from controlplane.jobs import listing, operations
from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text

router = Router(tags=["jobs"])
MAX_LIMIT = 500


def job_out(job: Job, detail: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.pk,
        "run": job.run_id,
        "task": job.run.task.name if job.run.task else None,
        "attempt": job.attempt,
        "shard": job.shard,
        "project": job.project.name,
        "spider": job.spider,
        "version": job.version.version,
        "node": job.node.name if job.node else None,
        "scrapyd_job_id": job.scrapyd_job_id,
        "state": job.state,
        "reason": job.reason,
        "priority": job.priority,
        "waiting_reason": waiting_text(job, position=detail),
        "cause": job.cause,
        "exit_status": job.exit_status,
        "finish_reason": job.finish_reason,
        "items": job.items,
        "pages": job.pages,
        "errors": job.errors,
        "cancel_requested": job.cancel_requested,
        "log_url": job.log_url,
        "created_at": job.created_at,
        "dispatched_at": job.dispatched_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "last_heartbeat": job.last_heartbeat,
    }
    if detail:
        retried_by = Job.objects.filter(retry_of=job).values_list("pk", flat=True).first()
        body.update(
            args=job.args,
            settings=job.settings,
            stats=job.stats,
            not_before=job.not_before,
            retry_of=job.retry_of_id,
            retried_by=retried_by,
            reported_final=job.reported_final,
            monitor_report=job.monitor_report,
        )
    return body


def _jobs() -> QuerySet[Job]:
    return Job.objects.select_related("run__task", "project", "version", "node")


def _get(job_id: int) -> Job:
    job = _jobs().filter(pk=job_id).first()
    if job is None:
        raise not_found(f"job {job_id}")
    return job


@router.get("", response=JobListOut, auth=VIEWER, summary="List jobs, newest first")
def list_jobs(
    request: HttpRequest,
    state: str | None = None,
    project: str | None = None,
    spider: str | None = None,
    task: str | None = None,
    node: str | None = None,
    run: int | None = None,
    active: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict:
    """``state`` takes a comma-separated list; ``task`` and ``node`` take names."""
    filters = listing.JobFilters(
        states=(state or "").split(","),
        active=active,
        project=project or "",
        spider=spider or "",
        task=task or "",
        node=node or "",
        run=run,
    )
    jobs = listing.filter_jobs(filters, _jobs())
    limit = max(1, min(limit, MAX_LIMIT))
    offset = max(0, offset)
    jobs = jobs.order_by("-created_at", "-pk")
    return {"count": jobs.count(), "items": [job_out(j) for j in jobs[offset : offset + limit]]}


@router.get("/{job_id}", response=JobDetailOut, auth=VIEWER)
def get_job(request: HttpRequest, job_id: int) -> dict:
    return job_out(_get(job_id), detail=True)


@router.post("/{job_id}/cancel", response=JobActionOut, auth=OPERATOR)
def cancel(request: HttpRequest, job_id: int) -> dict:
    job = _get(job_id)
    try:
        message = operations.cancel_job(job, actor=request.actor)
    except operations.OperationError as exc:
        raise ApiError(409, str(exc)) from None
    return {"ok": True, "message": message, "job": job_out(_get(job_id), detail=True)}


@router.post("/{job_id}/retry", response={201: JobActionOut}, auth=OPERATOR)
def retry(request: HttpRequest, job_id: int) -> Status:
    job = _get(job_id)
    try:
        new = operations.retry_now(job, actor=request.actor)
    except operations.OperationError as exc:
        raise ApiError(409, str(exc)) from None
    body = {
        "ok": True,
        "message": f"retry queued as job {new.pk}",
        "job": job_out(_get(job_id), detail=True),
        "retry": job_out(_get(new.pk), detail=True),
    }
    return Status(201, body)
