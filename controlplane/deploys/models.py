"""Eggs are stored here, not only on nodes, so a node that joins late can be brought up to date."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from controlplane.validators import validate_caps, validate_name, validate_version


class RecoveryPolicy(models.Model):
    """How failed runs recover: attempts, backoff, error threshold, time limit.

    A task has one; a project has one for its runs outside any task (jobs scheduled through the
    Scrapyd API). One definition, so both are validated and read alike.
    """

    max_attempts = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    retry_backoff = models.FloatField(
        default=30.0, validators=[MinValueValidator(0)], help_text="seconds before the 1st retry"
    )
    retry_backoff_factor = models.FloatField(default=2.0, validators=[MinValueValidator(1)])
    max_runtime = models.PositiveIntegerField(
        null=True, blank=True, help_text="seconds; longer runs are cancelled as timed out"
    )
    error_threshold = models.PositiveIntegerField(
        default=0, help_text="more ERROR log lines than this make a run failed"
    )

    class Meta:
        abstract = True


class Project(RecoveryPolicy):
    """A Scrapy project. Its recovery policy is for runs outside any task: one attempt by
    default, as Scrapyd itself runs a scheduled job once."""

    name = models.CharField(max_length=64, unique=True, validators=[validate_name])
    # The version new runs use unless a task pins one. Rollback moves this pointer back.
    current_version = models.ForeignKey(
        "deploys.Version", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Who runs next (docs/QUEUE.md): a full fleet's slots go to projects in proportion to this.
    share_weight = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.01), MaxValueValidator(1000)]
    )
    # Most jobs of the project dispatching, pending or running at once (None: no cap).
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    # spider name -> most of its jobs in flight at once, over all tasks and ad-hoc runs.
    spider_caps = models.JSONField(default=dict, blank=True, validators=[validate_caps])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def latest_version(self) -> Version | None:
        return self.versions.filter(deleted_at__isnull=True).order_by("-number").first()


class Version(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=18, validators=[validate_version])
    # The numeric value, so ordering is numeric and never Scrapyd's string sort.
    number = models.PositiveBigIntegerField(editable=False)
    egg = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    spiders = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when the version was deleted but jobs still refer to it: the row stays for their
    # history, the egg is dropped, and the number is never reused.
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="unique_project_version")
        ]

    def __str__(self) -> str:
        return f"{self.project.name} {self.version}"

    def save(self, *args, **kwargs) -> None:
        self.number = int(self.version)
        super().save(*args, **kwargs)


class NodeDeployment(models.Model):
    """One version on one node: the per-node result of a deploy, and what to clean up."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DEPLOYED = "deployed", "deployed"
        FAILED = "failed", "failed"
        REMOVED = "removed", "removed"

    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="deployments")
    version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="deployments")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "version"], name="unique_node_version")
        ]

    def __str__(self) -> str:
        return f"{self.version} on {self.node.name}: {self.state}"
