"""Dashboard section: runs and jobs. The run list and run page live here; the job list and the
job page in their own modules (``jobs``, ``job``); this module maps every URL of the section."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.utils import timezone

from controlplane.dashboard import paging
from controlplane.dashboard.access import requires
from controlplane.dashboard.views import job, jobs
from controlplane.dashboard.views.listfilters import RunFilterForm
from controlplane.jobs.completion import Progress, progress
from controlplane.jobs.listing import RunFilters, run_querysets, with_jobs
from controlplane.scheduling.models import Task, TaskRun

ENDED_GRACE = timedelta(seconds=10)


def with_progress(runs: list[TaskRun]) -> list[TaskRun]:
    """Each run with ``progress`` and ``job_count`` set, from the jobs prefetched with it."""
    for run in runs:
        run.progress = progress(run)  # type: ignore[attr-defined]
        run.job_count = len(run.jobs.all())  # type: ignore[attr-defined]
    return runs


def active_runs(runs: list[TaskRun]) -> list[int]:
    return [run.pk for run in runs if run.state == TaskRun.State.ACTIVE]


@requires()
def run_list(request: HttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    status, page = 200, None
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        filters = form.filters() if form.is_bound else RunFilters()
        querysets = [with_jobs(runs) for runs in run_querysets(filters)]
        page = paging.merged_page(querysets, "scheduled_for", request.GET.get("cursor"))
        with_progress(page.rows)
    context = {
        "form": form,
        "page": page,
        "live_ids": active_runs(page.rows) if page else [],
        "live_every": jobs.LIVE_ROWS_EVERY,
        "filtered": any(v for k, v in request.GET.lists() if k != "cursor"),
        "task_names": list(Task.objects.order_by("name").values_list("name", flat=True)),
    }
    return render(request, "dashboard/runs/list.html", context, status=status)


@requires()
def run_rows(request: HttpRequest) -> HttpResponse:
    ids = jobs.parse_ids(request.GET.get("ids", ""))
    if ids is None:
        return HttpResponseBadRequest("ids must be run ids separated by commas")
    runs = list(with_jobs(TaskRun.objects.select_related("task").filter(pk__in=ids)))
    runs.sort(key=lambda r: (r.scheduled_for, r.pk), reverse=True)
    context = {
        "runs": with_progress(runs),
        "live_ids": active_runs(runs),
        "live_every": jobs.LIVE_ROWS_EVERY,
    }
    return render(request, "dashboard/runs/_live_rows.html", context)


def shard_rows(result: Progress, run: TaskRun) -> list[dict[str, Any]]:
    """``progress().per_shard`` with each shard's latest job (and so its node's name)."""
    by_pk = {j.pk: j for j in run.jobs.all()}
    return [{**row, "latest": by_pk[row["job"]]} for row in result.per_shard]


def chained_after(run: TaskRun) -> list[TaskRun]:
    """The runs a run's end started (chains); none while it is active, so no query then."""
    if run.state == TaskRun.State.ACTIVE or not run.task_id:
        return []
    return list(run.downstream_runs.select_related("task").order_by("pk"))


@requires()
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    runs = TaskRun.objects.select_related("task", "upstream_run__task")
    run = get_object_or_404(with_jobs(runs), pk=run_id)
    result = progress(run)
    ended_recently = run.finished_at and timezone.now() - run.finished_at < ENDED_GRACE
    context = {
        "run": run,
        "progress": result,
        "shards": shard_rows(result, run),
        "fanout": bool(run.crawl_id) or result.shards > 1,
        "jobs": sorted(run.jobs.all(), key=lambda j: (j.shard, j.attempt, j.pk)),
        "downstream_runs": chained_after(run),
        "live": run.state == TaskRun.State.ACTIVE or bool(ended_recently),
        "live_every": job.LIVE_EVERY,
    }
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/runs/_live.html", context)
    return render(request, "dashboard/runs/detail.html", context)


urlpatterns = [
    path("runs/", run_list, name="runs"),
    path("runs/rows/", run_rows, name="run-rows"),
    path("runs/<int:run_id>/", run_detail, name="run"),
    path("jobs/", jobs.job_list, name="jobs"),
    path("jobs/rows/", jobs.job_rows, name="job-rows"),
    path("jobs/<int:job_id>/", job.job_detail, name="job"),
    path("jobs/<int:job_id>/log/", job.job_log, name="job-log"),
    path("jobs/<int:job_id>/items/", job.job_items, name="job-items"),
    path("jobs/<int:job_id>/items/where/", job.job_items_where, name="job-items-where"),
    path("jobs/<int:job_id>/cancel/", job.job_cancel, name="job-cancel"),
    path("jobs/<int:job_id>/retry/", job.job_retry, name="job-retry"),
]
