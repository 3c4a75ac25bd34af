"""Scrapyd's HTML pages over the fleet: the home page, ``/jobs`` (which ScrapydWeb parses),
and each job's log, proxied from its node so a client never needs to reach a node.

``/jobs`` keeps Scrapyd's table: ``<table id="jobs">`` with a ``<tbody>`` each for pending,
running and finished, and each row on one line (``<tr><td>…</td>…</tr>``), the layout older
Scrapyd versions rendered and ScrapydWeb's parser expects right after ``<body><h1>Jobs</h1>``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.lib.scrapyd import ScrapydError
from controlplane.scrapydapi import listing
from controlplane.scrapydapi.auth import Unauthorized, actor_from_basic_auth, unauthorized
from controlplane.scrapydapi.views import prefix_of

HEADERS = ["Project", "Spider", "Job", "PID", "Start", "Runtime", "Finish", "Log", "Cancel"]


def _seconds(value: datetime | None) -> str:
    """Scrapyd's times without microseconds, in local time."""
    if value is None:
        return ""
    return str(timezone.localtime(value).replace(tzinfo=None, microsecond=0))


def _runtime(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    span = (end or timezone.now()) - start
    return str(span - timedelta(microseconds=span.microseconds))


def _row(cells: dict[str, str]) -> str:
    return "<tr>" + "".join(f"<td>{cells.get(h, '')}</td>" for h in HEADERS) + "</tr>"


def _cancel_button(prefix: str, job: Job) -> str:
    return format_html(
        '<form method="post" action="{}/cancel.json"><input type="hidden" name="project" '
        'value="{}"><input type="hidden" name="job" value="{}"><input type="submit" '
        'value="Cancel"></form>',
        prefix,
        job.project.name,
        job.chain_key,
    )


def _log_link(prefix: str, job: Job) -> str:
    if not job.node_id:
        return ""
    return format_html('<a href="{}{}">Log</a>', prefix, listing.log_path(job))


def _rows(prefix: str) -> dict[str, str]:
    jobs = listing.latest_attempts()
    active = list(jobs.filter(state__in=Job.ACTIVE).order_by("created_at", "pk"))
    keep = settings.CRAWLFLEET_SCRAPYD_FINISHED_TO_KEEP
    ended = list(jobs.filter(state__in=Job.FINAL).order_by("-finished_at", "-pk")[:keep])
    common = {
        job.pk: {
            "Project": format_html("{}", job.project.name),
            "Spider": format_html("{}", job.spider),
            "Job": format_html("{}", job.chain_key),
        }
        for job in [*active, *ended]
    }
    pending = [
        _row({**common[j.pk], "Cancel": _cancel_button(prefix, j)})
        for j in active
        if j.state in listing.PENDING_STATES
    ]
    running = [
        _row(
            {
                **common[j.pk],
                "PID": str(j.pid or ""),
                "Start": _seconds(j.started_at),
                "Runtime": _runtime(j.started_at, None),
                "Log": _log_link(prefix, j),
                "Cancel": _cancel_button(prefix, j),
            }
        )
        for j in active
        if j.state == Job.State.RUNNING
    ]
    finished = [
        _row(
            {
                **common[j.pk],
                "Start": _seconds(j.started_at or j.created_at),
                "Runtime": _runtime(j.started_at or j.created_at, j.finished_at),
                "Finish": _seconds(j.finished_at),
                "Log": _log_link(prefix, j),
            }
        )
        for j in reversed(ended)
    ]
    return {
        "pending": "\n".join(pending),
        "running": "\n".join(running),
        "finished": "\n".join(finished),
    }


def _authorized(request: HttpRequest) -> HttpResponse | None:
    try:
        actor_from_basic_auth(request)
    except Unauthorized as exc:
        return unauthorized(str(exc))
    return None


def jobs_page(request: HttpRequest) -> HttpResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    prefix = prefix_of(request)
    headers = format_html_join("", "<th>{}</th>", ((h,) for h in HEADERS))
    html = render_to_string(
        "scrapydapi/jobs.html",
        {"headers": headers, "span": len(HEADERS), "rows": _rows(prefix), "prefix": prefix},
    )
    return HttpResponse(html, content_type="text/html; charset=utf-8")


def home_page(request: HttpRequest) -> HttpResponse:
    if (denied := _authorized(request)) is not None:
        return denied
    projects = list(Project.objects.order_by("name").values_list("name", flat=True))
    html = render_to_string(
        "scrapydapi/home.html", {"projects": projects, "prefix": prefix_of(request)}
    )
    return HttpResponse(html, content_type="text/html; charset=utf-8")


def requested_range(header: str, limit: int) -> tuple[int | None, int, bool]:
    """``(start, max_bytes, partial)`` for a ``Range`` header: the first range of ``bytes=a-b``,
    ``bytes=a-`` or ``bytes=-n``; without one (or an unusable one) the last ``limit`` bytes."""
    unit, _, ranges = header.strip().partition("=")
    first, dash, end = ranges.split(",")[0].strip().partition("-")
    if (
        unit.strip() != "bytes"
        or not dash
        or not (first.isdigit() or (not first and end.isdigit()))
    ):
        return None, limit, False
    if not first:
        return None, max(1, int(end)), True
    if end.isdigit() and int(end) >= int(first):
        return int(first), int(end) - int(first) + 1, True
    return int(first), limit, True


def log_file(request: HttpRequest, project: str, spider: str, job: str) -> HttpResponse:
    """The job's log from its node, with ``Range`` support; never a path of the client's own."""
    if (denied := _authorized(request)) is not None:
        return denied
    found = listing.find_chain(job, project)
    if found is None or found.spider != spider or found.node is None:
        return HttpResponse("No such log.\n", status=404, content_type="text/plain")
    limit = settings.CRAWLFLEET_SCRAPYD_LOG_LIMIT
    start, max_bytes, partial = requested_range(request.headers.get("Range", ""), limit)
    try:
        part = found.node.client().read_range(found.log_path, start, max_bytes)
    except ScrapydError as exc:
        message = f"The log is on node {found.node.name}, which cannot be reached now: {exc}\n"
        return HttpResponse(message, status=502, content_type="text/plain; charset=utf-8")
    if part is None:
        # Scrapyd keeps only the newest logs of each spider (jobs_to_keep).
        return HttpResponse(
            "The node no longer has this log.\n", status=404, content_type="text/plain"
        )
    whole = part.start == 0 and part.end == part.size
    status = 206 if partial or not whole else 200
    response = HttpResponse(part.data, status=status, content_type="text/plain; charset=utf-8")
    response["Accept-Ranges"] = "bytes"
    if status == 206 and part.data:
        response["Content-Range"] = f"bytes {part.start}-{part.end - 1}/{part.size}"
    return response
