from django.contrib import admin

from controlplane.jobs.admin_actions import cancel_jobs, retry_jobs
from controlplane.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "spider",
        "attempt",
        "state",
        "node",
        "items",
        "errors",
        "reason",
        "created_at",
    ]
    list_filter = ["state", "node", "project"]
    search_fields = ["spider", "scrapyd_job_id"]
    actions = [cancel_jobs, retry_jobs]
    exclude = ["report_token_hash"]
    readonly_fields = [f.name for f in Job._meta.fields if f.name not in ("report_token_hash",)]
