"""Spider reports: the crawl's own account of its start, liveness and outcome.

Authenticated by the per-job secret the dispatcher handed to the spider (only its hash is
stored), not by an API token: a spider can speak for its own job and nothing else. The reply tells
the spider whether to go on. A job that was cancelled, has already ended, or was declared lost
(its node forgot it, so a retry may run elsewhere) is told to stop, so an orphan never crawls
beside its retry.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router
from ninja.errors import AuthenticationError
from ninja.security.base import AuthBase

from controlplane.api.errors import ApiError
from controlplane.api.schemas import ReportIn, ReportOut
from controlplane.jobs.models import Job

router = Router(tags=["reports"])
MAX_STATS_BYTES = 256 * 1024
_NOT_STARTED = (Job.State.DISPATCHING, Job.State.PENDING)


class JobTokenAuth(AuthBase):
    """The job's own secret, checked before the report's fields are read (only a body that is
    not readable JSON at all is refused earlier, by ``controlplane.api.request_body``)."""

    openapi_type = "http"
    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> Job:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        match = request.resolver_match
        job_id = match.kwargs.get("scrapyd_job_id", "") if match else ""
        job = Job.objects.filter(scrapyd_job_id=job_id).first() if job_id else None
        # One answer for an unknown job and a wrong token: job ids are not for probing.
        if job is None or scheme.lower() != "bearer" or not job.check_report_token(secret.strip()):
            raise AuthenticationError(message="unknown job or wrong job token")
        return job


def _stats(stats: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(stats, default=str)) > MAX_STATS_BYTES:
        raise ApiError(422, "stats are too large", fields={"stats": ["too large"]})
    return stats


def _headline(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``Job.apply_stats`` would copy, without touching the row's other fields."""
    probe = Job()
    try:
        probe.apply_stats(stats)
    except (TypeError, ValueError) as exc:
        raise ApiError(422, f"malformed stats: {exc}", fields={"stats": [str(exc)]}) from None
    return {
        "stats": probe.stats,
        "items": probe.items,
        "pages": probe.pages,
        "errors": probe.errors,
        "finish_reason": probe.finish_reason,
    }


def decision(job: Job) -> dict[str, str]:
    if job.cancel_requested:
        return {"action": "stop", "reason": f"cancel requested: {job.reason}".strip(": ")}
    if job.state == Job.State.LOST:
        return {
            "action": "stop",
            "reason": "the job was declared lost (its node forgot it); a retry may run elsewhere",
        }
    if job.is_final:
        return {"action": "stop", "reason": f"the job has already ended ({job.state})"}
    if job.state == Job.State.QUEUED:
        return {"action": "stop", "reason": "the job is not dispatched to any node"}
    return {"action": "continue", "reason": ""}


@router.post(
    "/{scrapyd_job_id}", response=ReportOut, auth=JobTokenAuth(), summary="A spider reports"
)
def report(request: HttpRequest, scrapyd_job_id: str, payload: ReportIn) -> dict[str, str]:
    """``started``, ``heartbeat`` (with live stats) or ``finished`` (final stats).

    Header ``Authorization: Bearer <CRAWLFLEET_JOB_TOKEN>``. The state of a finished job is left
    for the poller to classify from the node's exit record and these stats.
    """
    job: Job = request.auth  # type: ignore[attr-defined]
    now = timezone.now()
    stats = _stats(payload.stats)
    live = Job.objects.filter(pk=job.pk)

    if payload.event in ("started", "heartbeat") and job.state in _NOT_STARTED:
        # Sent before (or instead of) the poller noticing it run.
        job.transition(_NOT_STARTED, Job.State.RUNNING, started_at=now, last_heartbeat=now)
    if payload.event == "started":
        live.filter(started_at__isnull=True).update(started_at=now)
        live.exclude(state__in=Job.FINAL).update(last_heartbeat=now, updated_at=now)
    elif payload.event == "heartbeat":
        fields = _headline(stats) if stats else {}
        fields.pop("finish_reason", None)
        live.exclude(state__in=Job.FINAL).update(last_heartbeat=now, updated_at=now, **fields)
        # An orphan of a lost job still beats: record it, so its liveness is visible.
        live.filter(state=Job.State.LOST).update(last_heartbeat=now)
    else:
        fields = _headline(stats)
        if payload.finish_reason:
            fields["finish_reason"] = payload.finish_reason[:100]
        # Once per job: a replayed report cannot rewrite a recorded outcome.
        live.filter(reported_final=False).update(
            reported_final=True, last_heartbeat=now, updated_at=now, **fields
        )
    job.refresh_from_db()
    return decision(job)
