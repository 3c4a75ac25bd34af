"""Channels, rules, the event queue and deliveries.

An :class:`AlertEvent` is queued by the ``event_raised`` receiver. The sender routes it to a
:class:`Delivery` per matching :class:`AlertRule` (folding it into the open delivery of its group,
if there is one) and sends due deliveries through their :class:`Channel`. Every state change of
a delivery is a conditional ``UPDATE ... WHERE state = old``, so replicas never send twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.validators import validate_name

ANY_CLAIM = object()


class Channel(models.Model):
    """Where alerts go. ``secret`` and ``apprise_urls`` are write-only: never returned by the
    API, never on a page, never in the audit log (apprise URLs embed their service's tokens)."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "webhook"
        EMAIL = "email", "email"
        APPRISE = "apprise", "apprise"

    name = models.CharField(max_length=64, unique=True, validators=[validate_name])
    kind = models.CharField(max_length=10, choices=Kind.choices)
    url = models.CharField(max_length=500, blank=True, help_text="webhook: the http(s) URL")
    recipients = models.JSONField(default=list, blank=True, help_text="email: addresses")
    # webhook: the HMAC-SHA256 key that signs every request.
    secret = models.CharField(max_length=500, blank=True)
    apprise_urls = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def has_secret(self) -> bool:
        return bool(self.secret or self.apprise_urls)

    @property
    def apprise_schemes(self) -> list[str]:
        """What services an apprise channel reaches, without their tokens."""
        return sorted({str(u).partition("://")[0].lower() for u in self.apprise_urls or []})


class AlertRule(models.Model):
    """Which events go to which channel. Every filter is optional: no project means every
    project, no task every task, an empty ``event_kinds`` every kind."""

    name = models.CharField(max_length=64, unique=True, validators=[validate_name])
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="rules")
    event_kinds = models.JSONField(default=list, blank=True)
    # A rule about a project or task that is deleted goes with it; it never widens to all.
    project = models.ForeignKey(
        "deploys.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    task = models.ForeignKey(
        "scheduling.Task", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    cooldown = models.PositiveIntegerField(
        default=600, help_text="seconds after an alert of a group during which repeats are folded"
    )
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    quiet_timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def matches(self, event: AlertEvent) -> bool:
        return (
            (self.project_id is None or self.project_id == event.project_id)
            and (self.task_id is None or self.task_id == event.task_id)
            and (not self.event_kinds or event.kind in self.event_kinds)
        )


class AlertEvent(models.Model):
    """One raised event, queued until the sender routes it (``routed_at``). The subject ids are
    plain numbers, not foreign keys: the history outlives the nodes, jobs and tasks it names."""

    kind = models.CharField(max_length=32)
    summary = models.CharField(max_length=500)
    detail = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    group_key = models.CharField(max_length=200)
    project_id = models.PositiveBigIntegerField(null=True, blank=True)
    task_id = models.PositiveBigIntegerField(null=True, blank=True)
    node_id = models.PositiveBigIntegerField(null=True, blank=True)
    job_id = models.PositiveBigIntegerField(null=True, blank=True)
    run_id = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    routed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # The router's queue: only unrouted rows, oldest first; stays tiny.
            models.Index(
                fields=["created_at", "id"],
                condition=Q(routed_at__isnull=True),
                name="alertevent_queued",
            ),
            models.Index(fields=["created_at"], name="alertevent_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.summary}"


class Delivery(models.Model):
    """One message to one channel: a group of events of one rule, sent once."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Kept when the rule is deleted: the history stays; a pending delivery goes with its rule.
    rule = models.ForeignKey(
        AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    group_key = models.CharField(max_length=200)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    digest = models.BooleanField(default=False, help_text="repeats folded during a cooldown")
    test = models.BooleanField(default=False)
    events = models.ManyToManyField(AlertEvent, related_name="deliveries", blank=True)
    event_count = models.PositiveIntegerField(default=0)
    first_event_at = models.DateTimeField(default=timezone.now)
    last_event_at = models.DateTimeField(default=timezone.now)
    not_before = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    subject = models.CharField(max_length=300, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            # One open delivery per group of a rule: events fold into it. A router that loses
            # the insert race gets an IntegrityError and folds into the winner's delivery.
            models.UniqueConstraint(
                fields=["rule", "group_key"],
                condition=Q(state="pending"),
                name="delivery_one_open_per_group",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "not_before"], name="delivery_due"),
            models.Index(fields=["state", "claimed_at"], name="delivery_claimed"),
            models.Index(fields=["rule", "group_key", "created_at"], name="delivery_group_latest"),
            models.Index(fields=["created_at", "id"], name="delivery_newest"),
            models.Index(fields=["state", "created_at", "id"], name="delivery_state_newest"),
            models.Index(fields=["channel", "created_at", "id"], name="delivery_channel_newest"),
            # The history filtered by channel and state at once (the dashboard's filters).
            models.Index(
                fields=["channel", "state", "created_at", "id"], name="delivery_channel_state"
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.group_key} to {self.channel_id}: {self.state}"

    def transition(
        self,
        from_state: str,
        to: str,
        *,
        claim: datetime | object | None = ANY_CLAIM,
        **fields: Any,
    ) -> bool:
        """Move to ``to`` only if still ``from_state`` (and, when given, still claimed at
        ``claim``, so a sender whose claim was taken over changes nothing); True if won."""
        query = Delivery.objects.filter(pk=self.pk, state=from_state)
        if claim is not ANY_CLAIM:
            query = query.filter(claimed_at=claim)
        fields["updated_at"] = timezone.now()
        won = query.update(state=to, **fields) == 1
        if won:
            self.state = to
            for key, value in fields.items():
                setattr(self, key, value)
        return won


class DeliveryAttempt(models.Model):
    """One try at sending a delivery: the history the dashboard shows."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="history")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        indexes = [models.Index(fields=["delivery", "number"], name="attempt_delivery_number")]

    def __str__(self) -> str:
        return (
            f"attempt {self.number} of delivery {self.delivery_id}: {'ok' if self.ok else 'failed'}"
        )
