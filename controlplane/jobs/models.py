"""A Job is one attempt of a TaskRun (or one shard of a fan-out run) on one node.

State changes go through :meth:`Job.transition`, a conditional ``UPDATE ... WHERE state IN (...)``:
when several pollers or schedulers see the same event, exactly one of them wins the transition
and only the winner acts on it (schedules the retry, cancels the node's job, sends alerts).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings as django_settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from controlplane.lib.queueorder import queue_rank
from controlplane.lib.scrapyd import items_path, log_path

# Priorities of tasks and runs (Scrapyd's schedule.json ``priority`` too): higher goes first.
MIN_PRIORITY, MAX_PRIORITY = -100, 100
PRIORITY_VALIDATORS = [MinValueValidator(MIN_PRIORITY), MaxValueValidator(MAX_PRIORITY)]


def new_scrapyd_job_id() -> str:
    """Globally unique, so ids never collide when several tasks share a spider."""
    return uuid.uuid4().hex


class QueueRankField(models.FloatField):
    """The job's place in its project's queue (``controlplane.lib.queueorder.queue_rank``),
    computed on insert from its priority and queue time when not given, bulk inserts included."""

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if value is None:
            value = rank_of(model_instance.priority, model_instance.created_at or timezone.now())
            setattr(model_instance, self.attname, value)
        return value


def rank_of(priority: float, queued_at: Any) -> float:
    return queue_rank(priority, queued_at.timestamp(), django_settings.CRAWLFLEET_QUEUE_AGING)


class Job(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "queued (waiting for a node)"
        DISPATCHING = "dispatching", "dispatching"
        PENDING = "pending", "pending on node"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        # Ended as intended but broke a monitor rule set to "degraded": look, do not retry.
        DEGRADED = "degraded", "degraded"
        FAILED = "failed", "failed"
        LOST = "lost", "lost"
        CANCELLED = "cancelled", "cancelled"
        TIMED_OUT = "timed_out", "timed out"

    ACTIVE = (State.QUEUED, State.DISPATCHING, State.PENDING, State.RUNNING)
    ON_NODE = (State.DISPATCHING, State.PENDING, State.RUNNING)
    FINAL = (
        State.SUCCEEDED,
        State.DEGRADED,
        State.FAILED,
        State.LOST,
        State.CANCELLED,
        State.TIMED_OUT,
    )
    # Ended jobs whose crawl did its work (a degraded one with a caveat).
    SUCCESSFUL = (State.SUCCEEDED, State.DEGRADED)
    RETRYABLE = (State.FAILED, State.LOST, State.TIMED_OUT)

    run = models.ForeignKey("scheduling.TaskRun", on_delete=models.CASCADE, related_name="jobs")
    # The run's task, copied when the job is created (a run never changes task), so a task's
    # jobs are listed newest first from one index instead of a join and a sort.
    task = models.ForeignKey(
        "scheduling.Task",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="jobs",
        editable=False,
        db_index=False,  # job_task_created_idx starts with it
    )
    attempt = models.PositiveIntegerField(default=1)
    # At most one retry per attempt: a unique one-to-one, so two pollers cannot both retry.
    retry_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retried_by"
    )
    shard = models.PositiveIntegerField(default=0, help_text="index within a fan-out run")

    project = models.ForeignKey("deploys.Project", on_delete=models.PROTECT, related_name="jobs")
    spider = models.CharField(max_length=100)
    version = models.ForeignKey("deploys.Version", on_delete=models.PROTECT, related_name="jobs")
    args = models.JSONField(default=dict, blank=True)
    settings = models.JSONField(default=dict, blank=True)

    node = models.ForeignKey(
        "nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # Nodes earlier attempts ran on: avoided by the dispatcher while others are available.
    avoid_nodes = models.JSONField(default=list, blank=True)
    scrapyd_job_id = models.CharField(max_length=64, unique=True, default=new_scrapyd_job_id)
    # The id a Scrapyd client knows the job by: the first attempt's, kept by every retry.
    chain_id = models.CharField(max_length=64, blank=True, db_index=True)
    # Higher runs first among queued jobs (Scrapyd's schedule.json ``priority``).
    priority = models.FloatField(default=0.0, validators=PRIORITY_VALIDATORS)
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="crawl process on its node")

    state = models.CharField(max_length=11, choices=State.choices, default=State.QUEUED)
    reason = models.TextField(blank=True)
    # Why it ended, as a short code (``controlplane.jobs.outcome.Cause``): metrics and filters.
    cause = models.CharField(max_length=40, blank=True)
    # The monitors' verdict: rules broken (with their figures) and rules that could not be judged.
    monitor_report = models.JSONField(default=dict, blank=True)
    exit_status = models.IntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=100, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    items = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    log_url = models.CharField(max_length=500, blank=True)

    not_before = models.DateTimeField(null=True, blank=True, help_text="retry backoff")
    cancel_requested = models.BooleanField(default=False)
    # The spider's report/heartbeat credential; only its hash is kept.
    report_token_hash = models.CharField(max_length=64, blank=True)
    reported_final = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Lower goes first within its project (priority and aging, see docs/QUEUE.md). After
    # created_at, so a bulk insert has set that when this is computed.
    queue_rank = QueueRankField(null=True, editable=False)
    # Why a queued job has not started, in words; written by the planner when it passes it over.
    waiting_reason = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # In-flight jobs per node (placement), and a node's jobs in one state, newest first.
            models.Index(fields=["state", "node", "created_at", "id"], name="job_state_node_idx"),
            models.Index(fields=["state", "not_before"]),
            # The newest ended jobs first (Scrapyd's listjobs.json and /jobs).
            models.Index(fields=["state", "-finished_at"], name="job_state_finished"),
            # The dashboard's job list: newest first (keyset on created_at, id), alone or
            # filtered by one of these columns, stays an index range scan however deep.
            models.Index(fields=["created_at", "id"], name="job_created_idx"),
            models.Index(fields=["state", "created_at", "id"], name="job_state_created_idx"),
            models.Index(fields=["spider", "created_at", "id"], name="job_spider_created_idx"),
            models.Index(fields=["node", "created_at", "id"], name="job_node_created_idx"),
            models.Index(fields=["task", "created_at", "id"], name="job_task_created_idx"),
            # The overview's windows over recently ended jobs (controlplane.jobs.fleetstats): a
            # range on finished_at, with every column those queries read after it, so they read
            # the index alone (a day's rows, with their stats, are thousands of heap pages).
            models.Index(
                fields=["finished_at", "state", "attempt", "items", "pages", "errors"],
                name="job_finished_cover_idx",
            ),
            # /metrics (controlplane.jobs.tallies): jobs by state and cause, queued jobs by
            # project, and the items and pages of ended jobs by task, each read from the index
            # alone, never from the rows (whose stats make them large).
            models.Index(fields=["state", "cause"], name="job_state_cause_idx"),
            models.Index(fields=["state", "project", "not_before"], name="job_state_project_idx"),
            models.Index(
                fields=["task", "project", "state", "items", "pages"], name="job_task_totals_idx"
            ),
            # A project's queue, best first (the planner reads each project's head from it).
            models.Index(fields=["state", "project", "queue_rank", "id"], name="job_queue_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.spider} #{self.pk} attempt {self.attempt} ({self.state})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding and self.task_id is None and self.run_id is not None:
            self.task_id = self.run.task_id
        super().save(*args, **kwargs)

    # --- state machine -------------------------------------------------------------------
    def transition(self, from_states: Iterable[str], to: str, **fields: Any) -> bool:
        """Move to ``to`` only if still in one of ``from_states``; True if this call won."""
        from_states = list(from_states)
        now = timezone.now()
        if to in self.FINAL:
            fields.setdefault("finished_at", now)
        fields["updated_at"] = now
        won = Job.objects.filter(pk=self.pk, state__in=from_states).update(state=to, **fields) == 1
        if won:
            self.state = to
            for key, value in fields.items():
                setattr(self, key, value)
        return won

    @property
    def chain_key(self) -> str:
        """The id of this job's chain of attempts (see ``chain_id``)."""
        return self.chain_id or self.scrapyd_job_id

    @property
    def log_path(self) -> str:
        """The job's log, relative to its node's URL."""
        return log_path(self.project.name, self.spider, self.scrapyd_job_id)

    @property
    def items_path(self) -> str:
        """The job's items feed, relative to its node's URL (served only with an items_dir)."""
        return items_path(self.project.name, self.spider, self.scrapyd_job_id)

    def log_url_on(self, node: Any) -> str:
        """Where ``node`` serves this job's log (empty without a node)."""
        return f"{node.url.rstrip('/')}/{self.log_path}" if node is not None else ""

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL

    # --- report credentials ----------------------------------------------------------------
    def issue_report_token(self) -> str:
        """A fresh secret for the spider to authenticate its reports; store only the hash."""
        token = secrets.token_urlsafe(24)
        self.report_token_hash = hashlib.sha256(token.encode()).hexdigest()
        return token

    def check_report_token(self, token: str) -> bool:
        if not self.report_token_hash or not token:
            return False
        digest = hashlib.sha256(token.encode()).hexdigest()
        return secrets.compare_digest(digest, self.report_token_hash)

    def apply_stats(self, stats: dict[str, Any]) -> None:
        """Copy the headline numbers out of a Scrapy stats dict."""
        self.stats = stats
        self.items = int(stats.get("item_scraped_count", 0) or 0)
        self.pages = int(stats.get("response_received_count", 0) or 0)
        self.errors = int(stats.get("log_count/ERROR", 0) or 0)
        self.finish_reason = str(stats.get("finish_reason", "") or "")[:100]


class JobSample(models.Model):
    """A job's progress at one heartbeat: what its items-and-pages chart is drawn from.

    Written by :func:`controlplane.jobs.samples.record_sample` on each report; thinned so a job
    keeps at most ``samples.MAX_SAMPLES`` rows however long it runs.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    items = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["job", "at"], name="jobsample_job_at_idx")]

    def __str__(self) -> str:
        return f"job {self.job_id} at {self.at:%H:%M:%S}: {self.items} items, {self.pages} pages"
