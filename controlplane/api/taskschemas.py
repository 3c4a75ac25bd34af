"""Request and response shapes of the tasks routes (with runs and cron previews).

Kept apart from :mod:`controlplane.api.schemas` so each stays a size a reader can take in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema


# --- tasks ---------------------------------------------------------------------------------------
class TaskIn(Schema):
    name: str
    project: str
    spider: str
    version: str | None = None
    args: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    cron: str = Field("", description="empty: runs only after after_task")
    timezone: str = "UTC"
    enabled: bool = True
    selector: str = "any"
    selector_tags: list[str] = []
    selector_nodes: list[str] = []
    max_attempts: int = 3
    retry_backoff: float = 30.0
    retry_backoff_factor: float = 2.0
    max_runtime: int | None = None
    overlap: str = "skip"
    fanout: int = 1
    error_threshold: int = 0
    misfire_grace: int = 60
    priority: int = 0
    max_concurrent: int | None = None
    after_task: str | None = Field(None, description="run after this task's runs end")
    after_condition: str = "success"
    pass_upstream: bool = False


class TaskPatch(Schema):
    name: str | None = None
    project: str | None = None
    spider: str | None = None
    version: str | None = None
    args: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    cron: str | None = None
    timezone: str | None = None
    enabled: bool | None = None
    selector: str | None = None
    selector_tags: list[str] | None = None
    selector_nodes: list[str] | None = None
    max_attempts: int | None = None
    retry_backoff: float | None = None
    retry_backoff_factor: float | None = None
    max_runtime: int | None = None
    overlap: str | None = None
    fanout: int | None = None
    error_threshold: int | None = None
    misfire_grace: int | None = None
    priority: int | None = None
    max_concurrent: int | None = None
    after_task: str | None = None
    after_condition: str | None = None
    pass_upstream: bool | None = None


class TaskOut(Schema):
    id: int
    name: str
    project: str
    spider: str
    version: str | None
    args: dict[str, Any]
    settings: dict[str, Any]
    cron: str
    timezone: str
    enabled: bool
    selector: str
    selector_tags: list[str]
    selector_nodes: list[str]
    max_attempts: int
    retry_backoff: float
    retry_backoff_factor: float
    max_runtime: int | None
    overlap: str
    fanout: int
    error_threshold: int
    misfire_grace: int
    priority: int
    max_concurrent: int | None
    after_task: str | None
    after_condition: str
    pass_upstream: bool
    downstream_tasks: list[str] = Field(description="tasks that run after this one")
    next_run: datetime | None
    created_at: datetime
    updated_at: datetime


class CronQuery(Schema):
    cron: str
    timezone: str = "UTC"
    count: int = 5


class PreviewOut(Schema):
    cron: str
    timezone: str
    next_runs: list[datetime]


class RunOut(Schema):
    id: int
    task: str | None
    trigger: str
    state: str
    reason: str
    scheduled_for: datetime
    upstream_run: int | None = Field(description="the run whose end started this chained run")
    jobs: list[int]
