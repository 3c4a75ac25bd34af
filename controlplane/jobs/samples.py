"""A job's progress over time, one sample per report, for its items-and-pages chart.

Each heartbeat (and the start and final reports) adds a sample. A job that runs for days must
not grow without bound: once it has more than :data:`MAX_SAMPLES`, every other sample between
the first and the last is dropped, so the series keeps its shape at half the resolution.
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from controlplane.jobs.models import Job, JobSample

MAX_SAMPLES = 500


def record_sample(job: Job, at: datetime) -> JobSample:
    """Record ``job``'s current items, pages and errors at ``at``; thin the series if needed."""
    sample = JobSample.objects.create(
        job_id=job.pk, at=at, items=job.items, pages=job.pages, errors=job.errors
    )
    if JobSample.objects.filter(job_id=job.pk).count() > MAX_SAMPLES:
        thin(job.pk)
    return sample


def thin(job_id: int) -> int:
    """Drop every other sample of a job, keeping its first and last; how many were dropped."""
    with transaction.atomic():
        ids = list(
            JobSample.objects.filter(job_id=job_id)
            .order_by("at", "pk")
            .values_list("pk", flat=True)
        )
        dropped = ids[1:-1:2]
        JobSample.objects.filter(pk__in=dropped).delete()
    return len(dropped)


def series(job: Job) -> list[JobSample]:
    """The job's samples, oldest first."""
    return list(JobSample.objects.filter(job_id=job.pk).order_by("at", "pk"))
