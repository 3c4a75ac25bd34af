"""Jobs: list with filters, details with stats and log URL, cancel and retry."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router, Status

from controlplane import keyset
from controlplane.api.auth import OPERATOR, VIEWER
from controlplane.api.errors import ApiError, not_found
from controlplane.api.schemas import (
    JOB_COUNT_CAP,
    MAX_JOB_PAGE,
    JobActionOut,
    JobDetailOut,
    JobListOut,
    JobQueryIn,
)
from controlplane.jobs import listing, operations
from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text

router = Router(tags=["jobs"])


def job_out(job: Job, detail: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job.pk,
        "run": job.run_id,
        "task": job.task.name if job.task else None,  # the run's task, copied onto the job
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
    return Job.objects.select_related("task", "project", "version", "node")


def _listed() -> QuerySet[Job]:
    """A list row shows no stats, args, settings nor monitor report: large, so left unread."""
    return _jobs().defer("stats", "args", "settings", "monitor_report", "avoid_nodes")


def _get(job_id: int) -> Job:
    job = _jobs().filter(pk=job_id).first()
    if job is None:
        raise not_found(f"job {job_id}")
    return job


@router.get("", response=JobListOut, auth=VIEWER, summary="List jobs, newest first")
def list_jobs(request: HttpRequest, query: Query[JobQueryIn]) -> dict:
    """Filters combine. Follow ``next`` (or pass ``next_cursor`` as ``cursor``) until it is null:
    each page costs the same however deep. ``offset`` still works, at a cost that grows with it."""
    filters = listing.JobFilters(
        states=(query.state or "").split(","),
        active=query.active,
        project=query.project or "",
        spider=query.spider or "",
        task=query.task or "",
        node=query.node or "",
        run=query.run,
    )
    limit, offset = max(1, min(query.limit, MAX_JOB_PAGE)), max(0, query.offset)
    keyset.require_valid(query.cursor)
    if query.cursor and offset:
        raise ApiError(
            422,
            "cursor and offset exclude each other",
            fields={"offset": ["leave out with cursor"]},
        )
    jobs = listing.filter_jobs(filters, _listed())
    if offset:
        page = keyset.offset_page(jobs, "created_at", offset, limit)
    else:
        page = listing.job_page(filters, query.cursor, limit, _listed())
    if query.count == "exact":
        count, exact = jobs.count(), True
    else:
        count, exact = keyset.capped_count(jobs, JOB_COUNT_CAP)
    return {
        "count": count,
        "count_exact": exact,
        "items": [job_out(j) for j in page.rows],
        "next_cursor": page.next_cursor,
        "next": _next_url(request, page.next_cursor),
    }


def _next_url(request: HttpRequest, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    params = request.GET.copy()
    params.pop("offset", None)
    params["cursor"] = cursor
    return f"{request.path}?{params.urlencode()}"


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
