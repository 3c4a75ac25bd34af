"""Dashboard: the job list, filtered and keyset-paged, with its active rows kept current."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from controlplane.dashboard.access import requires
from controlplane.dashboard.views.listfilters import (
    ACTIVE_JOB_STATES,
    FAILED_JOB_STATES,
    JobFilterForm,
)
from controlplane.jobs.listing import JobFilters, job_page, jobs_for_listing
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task

LIVE_ROWS_EVERY = 3  # seconds between refreshes of a list's active rows
MAX_LIVE_ROWS = 200
_IDS = re.compile(r"^\d{1,18}(,\d{1,18})*$")


def name_choices() -> dict[str, list[str]]:
    """Suggestions for the filter bar's task, spider and node fields (small tables only)."""
    tasks = list(Task.objects.order_by("name").values_list("name", "spider"))
    return {
        "task_names": [name for name, _ in tasks],
        "spider_names": sorted({spider for _, spider in tasks}),
        "node_names": list(Node.objects.order_by("name").values_list("name", flat=True)),
    }


def live_ids(rows: list[Any], active: tuple[str, ...]) -> list[int]:
    return [row.pk for row in rows if row.state in active]


def parse_ids(raw: str) -> list[int] | None:
    """``1,2,3`` as ints (at most MAX_LIVE_ROWS); None if malformed."""
    if not _IDS.match(raw or ""):
        return None
    ids = [int(part) for part in raw.split(",")]
    return ids[:MAX_LIVE_ROWS]


@requires()
def job_list(request: HttpRequest) -> HttpResponse:
    form = JobFilterForm(request.GET or None)
    status, page = 200, None
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        filters = form.filters() if form.is_bound else JobFilters()
        page = job_page(filters, request.GET.get("cursor"))
    context = {
        "form": form,
        "page": page,
        "live_ids": live_ids(page.rows, Job.ACTIVE) if page else [],
        "live_every": LIVE_ROWS_EVERY,
        "active_states": ACTIVE_JOB_STATES,
        "failed_states": FAILED_JOB_STATES,
        "filtered": any(v for k, v in request.GET.lists() if k != "cursor"),
        **name_choices(),
    }
    return render(request, "dashboard/jobs/list.html", context, status=status)


@requires()
def job_rows(request: HttpRequest) -> HttpResponse:
    """The given rows, rendered again, as out-of-band swaps; polling stops once none is active."""
    ids = parse_ids(request.GET.get("ids", ""))
    if ids is None:
        return HttpResponseBadRequest("ids must be job ids separated by commas")
    jobs = list(jobs_for_listing().filter(pk__in=ids).order_by("-created_at", "-pk"))
    context = {"jobs": jobs, "live_ids": live_ids(jobs, Job.ACTIVE), "live_every": LIVE_ROWS_EVERY}
    return render(request, "dashboard/jobs/_live_rows.html", context)
