"""A MonitorRule: one check every ended job of a task (or of a whole project) is judged by.

A rule with no task is a project default: it applies to every task of the project and to the
project's runs outside any task. A task's own rule of the same kind and target (the same status
code, the same field) takes its place, and a disabled task rule switches the default off for
that task.
"""

from __future__ import annotations

from django.db import models

from controlplane.monitors import rules


class MonitorRule(models.Model):
    class Outcome(models.TextChoices):
        FAILED = "failed", "failed (retried like other failures)"
        DEGRADED = "degraded", "degraded (succeeded, but someone should look)"

    KIND_CHOICES = [(kind, spec.label) for kind, spec in rules.KINDS.items()]

    project = models.ForeignKey("deploys.Project", on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(
        "scheduling.Task", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=KIND_CHOICES)
    params = models.JSONField(default=dict)
    # Set from params (see rules.target_of), so "one rule per kind and target" is a constraint.
    target = models.CharField(max_length=100, blank=True, editable=False)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.DEGRADED)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "task_id", "kind", "target"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "target"],
                condition=models.Q(task__isnull=True),
                name="one_project_monitor_per_kind",
            ),
            models.UniqueConstraint(
                fields=["task", "kind", "target"],
                condition=models.Q(task__isnull=False),
                name="one_task_monitor_per_kind",
            ),
        ]
        indexes = [models.Index(fields=["project", "task"], name="monitor_scope_idx")]

    def __str__(self) -> str:
        return f"{self.scope}: {self.description}"

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.target

    @property
    def scope(self) -> str:
        return f"task {self.task}" if self.task_id else f"project {self.project}"

    @property
    def description(self) -> str:
        try:
            return rules.describe(self.kind, self.params)
        except (KeyError, TypeError):
            return f"{self.kind} {self.params}"

    @property
    def is_default(self) -> bool:
        return self.task_id is None


def effective_rules(project_id: int, task_id: int | None) -> list[MonitorRule]:
    """The enabled rules a job of this task (or of the project, outside tasks) is judged by."""
    rows = MonitorRule.objects.filter(project_id=project_id).filter(
        models.Q(task__isnull=True) | models.Q(task_id=task_id)
        if task_id is not None
        else models.Q(task__isnull=True)
    )
    chosen: dict[tuple[str, str], MonitorRule] = {}
    for rule in rows:
        current = chosen.get(rule.key)
        if current is None or (current.is_default and not rule.is_default):
            chosen[rule.key] = rule
    return [rule for rule in chosen.values() if rule.enabled]
