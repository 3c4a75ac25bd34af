"""Tasks (what to run, when, where, how to recover) and TaskRuns (one per fire)."""

from __future__ import annotations

from datetime import datetime

from apscheduler.triggers.cron import CronTrigger
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from controlplane.deploys.models import RecoveryPolicy
from controlplane.scheduling import cron
from controlplane.validators import (
    validate_name,
    validate_spider_args,
    validate_spider_settings,
    validate_tags,
)


class Task(RecoveryPolicy):
    class Selector(models.TextChoices):
        ANY = "any", "any healthy node"
        TAGS = "tags", "nodes with all these tags"
        NODES = "nodes", "these nodes"

    class Overlap(models.TextChoices):
        SKIP = "skip", "skip the new run"
        QUEUE = "queue", "queue it until the previous run ends"
        ALLOW = "allow", "run both"

    class AfterCondition(models.TextChoices):
        SUCCESS = "success", "on success (succeeded or degraded)"
        CLEAN = "clean", "on clean success (succeeded; not degraded)"
        ALWAYS = "always", "always (succeeded, degraded, failed or cancelled)"

    name = models.CharField(max_length=64, unique=True, validators=[validate_name])
    project = models.ForeignKey("deploys.Project", on_delete=models.PROTECT, related_name="tasks")
    spider = models.CharField(max_length=100, validators=[validate_name])
    # None: the project's current version at dispatch time (so a rollback applies).
    version = models.ForeignKey(
        "deploys.Version", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    args = models.JSONField(default=dict, blank=True, validators=[validate_spider_args])
    settings = models.JSONField(default=dict, blank=True, validators=[validate_spider_settings])
    # Empty: no schedule of its own, only runs after ``after_task`` (a chained-only task).
    cron = models.CharField(
        max_length=120, blank=True, help_text="5 fields, or 6 with seconds first"
    )
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)

    selector = models.CharField(max_length=5, choices=Selector.choices, default=Selector.ANY)
    selector_tags = models.JSONField(default=list, blank=True, validators=[validate_tags])
    selector_nodes = models.ManyToManyField("nodes.Node", blank=True, related_name="+")

    # A task retries by default (its project's policy, for runs outside tasks, does not).
    max_attempts = models.PositiveIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    overlap = models.CharField(max_length=5, choices=Overlap.choices, default=Overlap.SKIP)
    fanout = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(64)],
        help_text="run a Redis-fed spider on this many nodes sharing one crawl",
    )
    # Higher goes first among queued runs; a manual run may set its own (docs/QUEUE.md).
    priority = models.IntegerField(
        default=0, validators=[MinValueValidator(-100), MaxValueValidator(100)]
    )
    # Most of this task's jobs dispatching, pending or running at once (None: no cap); 1 means
    # "never run this twice at once", across scheduler replicas.
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    misfire_grace = models.PositiveIntegerField(
        default=60,
        help_text="seconds a late fire may still run; older fires are recorded as missed",
    )
    # Chains: a run of this task starts when a run of ``after_task`` ends (jobs/chains.py).
    after_task = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="downstream"
    )
    after_condition = models.CharField(
        max_length=7, choices=AfterCondition.choices, default=AfterCondition.SUCCESS
    )
    pass_upstream = models.BooleanField(
        default=False, help_text="add the upstream run's outcome and figures as spider arguments"
    )
    # Fires at or before this instant have been handled (dispatched, missed or skipped).
    fired_through = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def chain_matches(self, upstream_state: str) -> bool:
        """Whether an upstream run that ended in ``upstream_state`` starts a run of this task."""
        return upstream_state in CHAIN_STATES[self.after_condition]

    def trigger(self) -> CronTrigger:
        return cron.parse(self.cron, self.timezone)

    def delete(self, *args, **kwargs):
        """Collect the task's runs and delete them in one transaction.

        A scheduler may record a fire of this task at the same moment; inside one transaction
        (which on SQLite starts with the write lock) no run can slip in between the collection
        and the delete and break the foreign key.
        """
        with transaction.atomic():
            return super().delete(*args, **kwargs)

    def next_runs(self, count: int = 5, after: datetime | None = None) -> list[datetime]:
        if not self.cron:
            return []  # a chained-only task never fires by itself
        return cron.next_fire_times(self.trigger(), after or timezone.now(), count)

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if not self.cron and not self.after_task_id:
            errors["cron"] = ["required, unless the task runs after another task (after_task)"]
        try:
            if self.cron:
                self.trigger()
            else:
                cron.zone(self.timezone)
        except ValidationError as exc:
            key = "timezone" if "timezone" in exc.messages[0] else "cron"
            errors.setdefault(key, []).extend(exc.messages)
        if self.pass_upstream and (taken := sorted(set(self.args or {}) & set(UPSTREAM_ARGS))):
            errors.setdefault("args", []).append(
                f"{', '.join(taken)} are set by the upstream run (pass_upstream)"
            )
        if self.selector == self.Selector.TAGS and not self.selector_tags:
            errors.setdefault("selector_tags", []).append("select at least one tag")
        if self.project_id and self.spider:
            # The version a run would use (as jobs.runs.resolve_version picks it).
            version = self.version or self.project.current_version or self.project.latest_version()
            if version is not None and version.spiders and self.spider not in version.spiders:
                errors.setdefault("spider", []).append(
                    f"unknown spider {self.spider!r} in {version}; it has: {', '.join(version.spiders)}"
                )
            if self.version_id and self.version.project_id != self.project_id:
                errors.setdefault("version", []).append("the version belongs to another project")
        if errors:
            raise ValidationError(errors)


# The spider arguments a chained run gets from its upstream run when ``pass_upstream`` is set.
UPSTREAM_ARGS = (
    "upstream_run",
    "upstream_task",
    "upstream_state",
    "upstream_items",
    "upstream_pages",
    "upstream_errors",
)


class TaskRun(models.Model):
    """One fire of a task (or one manual/API run): the unit that must happen exactly once."""

    class Trigger(models.TextChoices):
        CRON = "cron", "cron"
        MANUAL = "manual", "manual"
        API = "api", "API"
        CHAIN = "chain", "chain"

    class State(models.TextChoices):
        ACTIVE = "active", "active"
        SUCCEEDED = "succeeded", "succeeded"
        DEGRADED = "degraded", "degraded (succeeded, but broke a monitor)"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"
        MISSED = "missed", "missed"
        SKIPPED = "skipped", "skipped (previous run still going)"

    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.CASCADE, related_name="runs"
    )
    trigger = models.CharField(max_length=6, choices=Trigger.choices, default=Trigger.CRON)
    scheduled_for = models.DateTimeField()
    state = models.CharField(max_length=9, choices=State.choices, default=State.ACTIVE)
    reason = models.TextField(blank=True)
    # A chained run: the run of the upstream task whose end started it.
    upstream_run = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="downstream_runs"
    )
    # Fan-out runs share one Redis crawl; its keys are namespaced by this id.
    crawl_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-scheduled_for"]
        constraints = [
            # The exactly-once guarantee: a second scheduler inserting the same fire fails here.
            models.UniqueConstraint(
                fields=["task", "scheduled_for"],
                condition=models.Q(trigger="cron"),
                name="one_run_per_cron_fire",
            ),
            # A chain starts a downstream task once per upstream run, however often it is asked.
            models.UniqueConstraint(
                fields=["task", "upstream_run"],
                condition=models.Q(trigger="chain"),
                name="one_chain_run_per_upstream_run",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "task"]),
            # A task's newest runs (history pages, last run, runs per day).
            models.Index(fields=["task", "-scheduled_for"], name="taskrun_task_newest"),
            # The run list: newest fire first, keyset-paged on (scheduled_for, id), alone or for
            # one state.
            models.Index(fields=["scheduled_for", "id"], name="taskrun_scheduled_idx"),
            models.Index(fields=["state", "scheduled_for", "id"], name="taskrun_state_sched_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.task or 'ad-hoc'} @ {self.scheduled_for:%Y-%m-%d %H:%M:%S}"


_ENDED_WELL = {TaskRun.State.SUCCEEDED, TaskRun.State.DEGRADED}
CHAIN_STATES: dict[str, set[str]] = {
    Task.AfterCondition.SUCCESS: _ENDED_WELL,
    Task.AfterCondition.CLEAN: {TaskRun.State.SUCCEEDED},
    Task.AfterCondition.ALWAYS: _ENDED_WELL | {TaskRun.State.FAILED, TaskRun.State.CANCELLED},
}
