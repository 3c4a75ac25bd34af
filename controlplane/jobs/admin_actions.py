"""Admin actions on jobs: cancel, retry now. Wire with ``actions = [cancel_jobs, retry_jobs]``."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.jobs.models import Job
from controlplane.jobs.operations import OperationError, cancel_job, retry_now


@admin.action(description="Cancel selected jobs", permissions=["change"])
def cancel_jobs(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job]
) -> None:
    for job in queryset:
        try:
            outcome = cancel_job(job)
        except OperationError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
        else:
            modeladmin.message_user(request, f"job {job.pk}: {outcome}", messages.SUCCESS)


@admin.action(description="Retry selected jobs now", permissions=["change"])
def retry_jobs(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Job]) -> None:
    for job in queryset:
        try:
            retry = retry_now(job)
        except OperationError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
        else:
            modeladmin.message_user(
                request, f"job {job.pk}: retry is job {retry.pk}", messages.SUCCESS
            )
