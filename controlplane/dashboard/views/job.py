"""Dashboard: one job. Its state, attempts, progress chart and stats kept current while it runs,
its log followed through the control plane, and an operator's cancel and retry."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from controlplane.accounts.roles import Role
from controlplane.dashboard.access import requires
from controlplane.dashboard.views.jobparts import items_place, progress_chart, stat_groups
from controlplane.jobs import operations
from controlplane.jobs.itemsfile import items_file, stream_items
from controlplane.jobs.listing import attempt_chain
from controlplane.jobs.logs import read_log
from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text
from controlplane.jobs.samples import series

LIVE_EVERY = 2  # seconds between refreshes of a job that is still going
ENDED_GRACE = timedelta(seconds=10)  # keep refreshing briefly: a retry or final stats may follow
LOG_EVERY = 2
LOG_RETRY_EVERY = 5  # when the node did not answer
_OFFSET = re.compile(r"^[0-9]{1,15}$")


def _job(job_id: int) -> Job:
    return get_object_or_404(
        Job.objects.select_related("task", "run", "node", "project", "version"), pk=job_id
    )


def still_changing(job: Job) -> bool:
    if not job.is_final:
        return True
    return job.finished_at is not None and timezone.now() - job.finished_at < ENDED_GRACE


def live_context(job: Job) -> dict[str, Any]:
    chain = attempt_chain(job)
    retried_by = next((a for a in chain if a.retry_of_id == job.pk), None)
    samples = series(job)
    return {
        "job": job,
        "chain": chain,
        "retried_by": retried_by,
        "groups": stat_groups(job.stats or {}),
        "chart_json": progress_chart(samples, job.started_at) if samples else "",
        "sample_count": len(samples),
        "items": items_place(job),
        "successful_states": Job.SUCCESSFUL,
        "live": still_changing(job),
        "live_every": LIVE_EVERY,
        "waiting": waiting_text(job, position=True),
        "may_cancel": not job.is_final,
        "may_retry": job.state in operations.RETRYABLE_BY_OPERATOR
        and (retried_by is None or retried_by.state == Job.State.QUEUED),
    }


@requires()
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """The page; to htmx's refresh, its live part alone (the stats swap in out of band)."""
    context = live_context(_job(job_id))
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/jobs/_live.html", {**context, "oob": True})
    return render(request, "dashboard/jobs/detail.html", context)


@requires()
def job_log(request: HttpRequest, job_id: int) -> HttpResponse:
    """The next piece of the job's own log, from ``offset`` (none: the end of the log).

    The job id picks the log, the offset where to read: nothing else is accepted, so no request
    can make the control plane read any other file from any node.
    """
    unexpected = sorted(set(request.GET) - {"offset"})
    if unexpected:
        return HttpResponseBadRequest(f"unexpected parameter(s): {', '.join(unexpected)}")
    raw = request.GET.get("offset")
    if raw is not None and not _OFFSET.match(raw):
        return HttpResponseBadRequest("offset must be a whole number of bytes, 0 or more")
    job = get_object_or_404(Job.objects.select_related("project", "node"), pk=job_id)
    chunk = read_log(job, int(raw) if raw is not None else None)
    every = LOG_EVERY if chunk.state in ("ok", "waiting") else LOG_RETRY_EVERY
    context = {
        "job": job,
        "chunk": chunk,
        "first": raw is None,
        # Behind the end of the log: read on at once; caught up: ask again in a moment.
        "trigger": "load" if chunk.more else f"every {every}s",
    }
    return render(request, "dashboard/jobs/_log_chunk.html", context)


@requires()
def job_items_where(request: HttpRequest, job_id: int) -> HttpResponse:
    """Whether the job's node serves an items feed (asked once the job has ended)."""
    job = get_object_or_404(Job.objects.select_related("project", "node"), pk=job_id)
    context = {"job": job, "feed": items_file(job)}
    return render(request, "dashboard/jobs/_items_feed.html", context)


@requires()
def job_items(request: HttpRequest, job_id: int) -> HttpResponse:
    """The job's items feed from its node, through the control plane (never a link to a node)."""
    job = get_object_or_404(Job.objects.select_related("project", "node"), pk=job_id)
    feed = items_file(job)
    if feed.state != "served" or feed.size is None:
        return HttpResponse(feed.message, status=404, content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(
        stream_items(job, feed.size), content_type="application/x-ndjson"
    )
    response["Content-Length"] = str(feed.size)
    response["Content-Disposition"] = f'attachment; filename="{job.spider}-job-{job.pk}.jl"'
    return response


@requires(Role.OPERATOR, post=True)
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job(job_id)
    try:
        outcome = operations.cancel_job(job, actor=request.actor)  # type: ignore[attr-defined]
    except operations.OperationError as exc:
        messages.error(request, f"Not cancelled: {exc}.")
    else:
        messages.success(request, f"Job {job.pk}: {outcome}.")
    return redirect("dashboard:job", job_id=job.pk)


@requires(Role.OPERATOR, post=True)
def job_retry(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _job(job_id)
    try:
        retry = operations.retry_now(job, actor=request.actor)  # type: ignore[attr-defined]
    except operations.OperationError as exc:
        messages.error(request, f"Not retried: {exc}.")
        return redirect("dashboard:job", job_id=job.pk)
    messages.success(
        request, f"Job {job.pk} retried as job {retry.pk} (attempt {retry.attempt}); it is queued."
    )
    return redirect("dashboard:job", job_id=retry.pk)
