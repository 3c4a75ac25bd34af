"""Spider reports: the crawl's own account of its start, liveness and outcome.

Authenticated by the per-job secret the dispatcher handed to the spider (only its hash is
stored), not by an API token: a spider can speak for its own job and nothing else. What a report
does to the job is :func:`controlplane.jobs.reports.apply_report`; the reply tells the spider
whether to go on. A job that was cancelled, has already ended, or was declared lost (its node
forgot it, so a retry may run elsewhere) is told to stop, so an orphan never crawls beside its
retry.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router
from ninja.errors import AuthenticationError
from ninja.security.base import AuthBase

from controlplane.api.schemas import ReportIn, ReportOut
from controlplane.jobs.models import Job
from controlplane.jobs.reports import apply_report

router = Router(tags=["reports"])


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


@router.post(
    "/{scrapyd_job_id}", response=ReportOut, auth=JobTokenAuth(), summary="A spider reports"
)
def report(request: HttpRequest, scrapyd_job_id: str, payload: ReportIn) -> dict[str, str]:
    """``started``, ``heartbeat`` (with live stats) or ``finished`` (final stats).

    Header ``Authorization: Bearer <CRAWLFLEET_JOB_TOKEN>``. The state of a finished job is left
    for the poller to classify from the node's exit record and these stats.
    """
    job: Job = request.auth  # type: ignore[attr-defined]
    return apply_report(job, payload.event, payload.stats, payload.finish_reason)
