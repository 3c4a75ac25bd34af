"""The node registry. A node is one Scrapyd server; its health decides whether it gets work."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from controlplane.events import NODE_BACK, NODE_DOWN, raise_event
from controlplane.lib.scrapyd import ScrapydClient
from controlplane.validators import validate_name, validate_node_url, validate_tags


class Node(models.Model):
    class State(models.TextChoices):
        UNKNOWN = "unknown", "unknown"
        UP = "up", "up"
        DEGRADED = "degraded", "degraded"
        DOWN = "down", "down"

    name = models.CharField(max_length=64, unique=True, validators=[validate_name])
    url = models.CharField(max_length=300, unique=True, validators=[validate_node_url])
    username = models.CharField(max_length=150, blank=True)
    # Never rendered by any API or page: forms take it write-only.
    password = models.CharField(max_length=300, blank=True)
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.01)])
    capacity = models.PositiveIntegerField(
        default=4, validators=[MinValueValidator(1)], help_text="Scrapyd max_proc"
    )
    enabled = models.BooleanField(default=True, help_text="a disabled node gets no new jobs")
    # Draining: no new jobs are placed on it; jobs already there run to their end and are
    # still polled. For maintenance: drain, wait until it is idle, then stop it.
    draining = models.BooleanField(default=False, help_text="a draining node gets no new jobs")
    self_registered = models.BooleanField(default=False)

    state = models.CharField(max_length=10, choices=State.choices, default=State.UNKNOWN)
    state_since = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_checked = models.DateTimeField(null=True, blank=True)
    last_latency = models.FloatField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    scrapyd_version = models.CharField(max_length=40, blank=True)
    # Counts from the node's last daemonstatus.json, for display; dispatch counts from the DB.
    running = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    # When and in which state the last HealthSample was written: the claim that lets one
    # poller replica, and only one, write each sample (see controlplane.nodes.health).
    health_sampled_at = models.DateTimeField(null=True, blank=True, editable=False)
    health_sampled_state = models.CharField(max_length=10, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    def client(self, timeout: float | None = None) -> ScrapydClient:
        return ScrapydClient(
            self.url,
            self.username,
            self.password,
            timeout=timeout or settings.CRAWLFLEET_NODE_TIMEOUT,
        )

    @property
    def schedulable(self) -> bool:
        """May new jobs be placed here? (Deploys still reach a draining node.)"""
        return (
            self.enabled
            and not self.draining
            and self.state in (self.State.UP, self.State.DEGRADED)
        )

    @property
    def display_state(self) -> str:
        """What an operator needs to know first: disabled, draining, or the health state."""
        if not self.enabled:
            return "disabled"
        if self.draining:
            return "draining"
        return self.state

    def matches(self, mode: str, tags: list[str], node_ids: set[int]) -> bool:
        """Does this node satisfy a task's node selector?"""
        if mode == "tags":
            return set(tags).issubset(self.tags or [])
        if mode == "nodes":
            return self.pk in node_ids
        return True

    # What every health check writes, whatever it finds.
    CHECK_FIELDS = (
        "last_checked",
        "last_latency",
        "last_seen",
        "last_error",
        "consecutive_failures",
        "running",
        "pending",
        "updated_at",
    )

    def record_check(
        self,
        *,
        ok: bool,
        latency: float | None = None,
        status: dict | None = None,
        error: str = "",
    ) -> tuple[str, str]:
        """Fold one health check into the node's state; returns (old state, new state)."""
        now = timezone.now()
        old = self.state
        self.last_checked = now
        self.last_latency = latency
        if ok:
            self.last_seen = now
            self.last_error = ""
            self.consecutive_failures = 0
            status = status or {}
            self.running = int(status.get("running", 0))
            self.pending = int(status.get("pending", 0))
            slow = latency is not None and latency > settings.CRAWLFLEET_NODE_SLOW_AFTER
            new = self.State.DEGRADED if slow else self.State.UP
        else:
            self.last_error = error[:2000]
            self.consecutive_failures += 1
            failing_long = self.consecutive_failures >= settings.CRAWLFLEET_NODE_DOWN_AFTER_FAILURES
            new = self.State.DOWN if failing_long or old == self.State.DOWN else self.State.DEGRADED
            if old == self.State.UNKNOWN and not failing_long:
                new = self.State.DOWN if self.last_seen is None else self.State.DEGRADED
        self.updated_at = now
        checked = {name: getattr(self, name) for name in self.CHECK_FIELDS}
        if new == old:
            # The usual check: nothing to flip, so one UPDATE, no transaction and none of
            # save()'s machinery (a tenth of a quiet poll's CPU).
            Node.objects.filter(pk=self.pk).update(**checked)
            return old, new
        with transaction.atomic():
            Node.objects.filter(pk=self.pk).update(**checked)
            if not self._flip(old, new, now):
                # Another poller flipped it first (and raised the event): nothing changed here.
                return self.state, self.state
        return old, new

    def _flip(self, old: str, new: str, now: datetime) -> bool:
        """Change the state only if it is still ``old`` (several pollers check each node), and
        raise node_down / node_back in the same transaction: one event per change."""
        won = Node.objects.filter(pk=self.pk, state=old).update(state=new, state_since=now) == 1
        if not won:
            self.refresh_from_db(fields=["state", "state_since"])
            return False
        self.state, self.state_since = new, now
        if new == self.State.DOWN:
            raise_event(
                NODE_DOWN,
                f"node {self.name} is down: {self.last_error or 'no answer'}"[:500],
                node_id=self.pk,
                detail={"node": self.name, "url": self.url, "was": old, "error": self.last_error},
                group=f"node:{self.pk}",
            )
        elif old == self.State.DOWN:
            raise_event(
                NODE_BACK,
                f"node {self.name} is back ({new})",
                node_id=self.pk,
                detail={"node": self.name, "url": self.url, "state": new},
                group=f"node:{self.pk}",
            )
        return True

    def down_longer_than(self, seconds: float) -> bool:
        return self.state == self.State.DOWN and timezone.now() - self.state_since > timedelta(
            seconds=seconds
        )


class HealthSample(models.Model):
    """One health check of a node, kept for its history: at most one a minute per node, plus
    one at every change of state (``changed``), for seven days."""

    # Indexed by (node, at) below, which serves lookups by node alone too.
    node = models.ForeignKey(
        Node, on_delete=models.CASCADE, related_name="health_samples", db_index=False
    )
    at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=Node.State.choices)
    previous_state = models.CharField(max_length=10, blank=True)
    changed = models.BooleanField(default=False, help_text="the check changed the node's state")
    ok = models.BooleanField()
    latency = models.FloatField(null=True, blank=True)
    running = models.PositiveIntegerField(default=0)
    pending = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["node", "at"], name="healthsample_node_at"),
            models.Index(
                fields=["node", "at"],
                condition=models.Q(changed=True),
                name="healthsample_node_changes",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id} {self.at:%Y-%m-%d %H:%M:%S} {self.state}"


class TagCap(models.Model):
    """At most ``max_concurrent`` jobs in flight, together, on the nodes carrying ``tag``."""

    tag = models.CharField(max_length=64, unique=True, validators=[validate_name])
    max_concurrent = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tag"]

    def __str__(self) -> str:
        return f"{self.tag}: {self.max_concurrent}"
