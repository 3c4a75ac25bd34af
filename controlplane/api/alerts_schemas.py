"""Request and response shapes of the alerting API. No output has a field for a channel's
secrets (the webhook's signing key, apprise URLs): only whether they are set."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from controlplane.alerts.services import MAX_PAGE


class ChannelIn(Schema):
    name: str
    kind: str = Field(description="webhook, email or apprise")
    url: str = Field("", description="webhook: the http(s) URL to POST to")
    recipients: list[Any] = Field([], description="email: the addresses")
    secret: str = Field("", description="webhook: the HMAC-SHA256 signing key (write-only)")
    apprise_urls: list[Any] = Field([], description="apprise: one or more URLs (write-only)")
    enabled: bool = True


class ChannelPatch(Schema):
    name: str | None = None
    kind: str | None = None
    url: str | None = None
    recipients: list[Any] | None = None
    secret: str | None = Field(None, description="left out or null: kept; empty: removed")
    apprise_urls: list[Any] | None = Field(None, description="left out or null: kept")
    enabled: bool | None = None


class ChannelOut(Schema):
    id: int
    name: str
    kind: str
    url: str
    recipients: list[str]
    enabled: bool
    signed: bool = Field(description="webhook: requests carry an HMAC signature")
    apprise_url_count: int
    apprise_schemes: list[str] = Field(description="the services apprise reaches (no tokens)")
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_signed(obj: Any) -> bool:
        return bool(obj.secret)

    @staticmethod
    def resolve_apprise_url_count(obj: Any) -> int:
        return len(obj.apprise_urls or [])


class RuleIn(Schema):
    name: str
    channel: str = Field(description="the channel's name")
    event_kinds: list[Any] = Field([], description="empty: every kind")
    project: str | None = Field(None, description="a project's name; null: every project")
    task: str | None = Field(None, description="a task's name; null: every task")
    cooldown: int = Field(600, description="seconds during which repeats of a group are folded")
    quiet_start: str | None = Field(None, description="local time, e.g. 22:00")
    quiet_end: str | None = Field(None, description="local time, e.g. 07:00")
    quiet_timezone: str = "UTC"
    enabled: bool = True


class RulePatch(Schema):
    name: str | None = None
    channel: str | None = None
    event_kinds: list[Any] | None = None
    project: str | None = None
    task: str | None = None
    cooldown: int | None = None
    quiet_start: str | None = None
    quiet_end: str | None = None
    quiet_timezone: str | None = None
    enabled: bool | None = None


class RuleOut(Schema):
    id: int
    name: str
    channel: str
    event_kinds: list[str]
    project: str | None
    task: str | None
    cooldown: int
    quiet_start: str | None
    quiet_end: str | None
    quiet_timezone: str
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_channel(obj: Any) -> str:
        return obj.channel.name

    @staticmethod
    def resolve_project(obj: Any) -> str | None:
        return obj.project.name if obj.project_id else None

    @staticmethod
    def resolve_task(obj: Any) -> str | None:
        return obj.task.name if obj.task_id else None

    @staticmethod
    def resolve_quiet_start(obj: Any) -> str | None:
        return obj.quiet_start.isoformat("minutes") if obj.quiet_start else None

    @staticmethod
    def resolve_quiet_end(obj: Any) -> str | None:
        return obj.quiet_end.isoformat("minutes") if obj.quiet_end else None


class AttemptOut(Schema):
    number: int
    started_at: datetime
    finished_at: datetime
    ok: bool
    error: str


class DeliveryOut(Schema):
    id: int
    uid: str = Field(description="the X-Crawlfleet-Delivery header of its webhook requests")
    rule: str | None
    channel: str
    channel_kind: str
    group_key: str
    state: str = Field(description="pending, sending, sent or failed")
    digest: bool
    test: bool
    event_count: int
    first_event_at: datetime
    last_event_at: datetime
    not_before: datetime
    attempts: int
    claimed_at: datetime | None
    last_error: str
    subject: str
    sent_at: datetime | None
    created_at: datetime
    history: list[AttemptOut]

    @staticmethod
    def resolve_uid(obj: Any) -> str:
        return str(obj.uid)

    @staticmethod
    def resolve_rule(obj: Any) -> str | None:
        return obj.rule.name if obj.rule_id else None

    @staticmethod
    def resolve_channel(obj: Any) -> str:
        return obj.channel.name

    @staticmethod
    def resolve_channel_kind(obj: Any) -> str:
        return obj.channel.kind

    @staticmethod
    def resolve_history(obj: Any) -> list[Any]:
        return list(obj.history.all())


class DeliveryQueryIn(Schema):
    state: str | None = Field(None, description="pending, sending, sent or failed")
    channel: str | None = Field(None, description="a channel's name")
    cursor: str | None = Field(None, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=MAX_PAGE, description="deliveries per page")


class DeliveryPageOut(Schema):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(
        description="pass as cursor for the next (older) page; null on the last page"
    )
