from django.contrib import admin

from controlplane.scheduling.models import Task, TaskRun


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "spider", "cron", "timezone", "enabled", "next_run"]
    list_filter = ["enabled", "project"]
    search_fields = ["name", "spider"]
    readonly_fields = ["next_runs_preview", "fired_through"]
    filter_horizontal = ["selector_nodes"]

    @admin.display(description="next run")
    def next_run(self, task: Task) -> str:
        try:
            runs = task.next_runs(1)
        except Exception as exc:  # an invalid stored expression must not break the list page
            return f"invalid: {exc}"
        return runs[0].isoformat() if runs else "never"

    @admin.display(description="next runs")
    def next_runs_preview(self, task: Task) -> str:
        if not task.pk:
            return "-"
        return ", ".join(t.isoformat() for t in task.next_runs(5))


@admin.register(TaskRun)
class TaskRunAdmin(admin.ModelAdmin):
    list_display = ["task", "trigger", "scheduled_for", "state", "created_at"]
    list_filter = ["state", "trigger"]
    readonly_fields = ["task", "trigger", "scheduled_for", "crawl_id", "created_at", "finished_at"]
