"""Request and response shapes of the REST API (they are the OpenAPI schema too).

Output schemas list their fields explicitly: a field added to a model never leaks by accident.
Node credentials are write-only; no output schema has a field for them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema

from controlplane.accounts.auditlog import MAX_PAGE_SIZE as MAX_AUDIT_PAGE

MAX_JOB_PAGE = 500
MAX_JOB_OFFSET = 100_000
JOB_COUNT_CAP = 10_000


class ErrorBody(Schema):
    code: str
    message: str
    fields: dict[str, list[str]] = {}


class ErrorOut(Schema):
    error: ErrorBody


# --- nodes --------------------------------------------------------------------------------------
class NodeOut(Schema):
    id: int
    name: str
    url: str
    has_credentials: bool
    tags: list[str]
    weight: float
    capacity: int
    enabled: bool
    draining: bool
    self_registered: bool
    state: str
    state_since: datetime
    last_seen: datetime | None
    last_checked: datetime | None
    last_latency: float | None
    last_error: str
    consecutive_failures: int
    scrapyd_version: str
    running: int
    pending: int
    schedulable: bool
    created_at: datetime

    @staticmethod
    def resolve_has_credentials(obj: Any) -> bool:
        return bool(obj.username or obj.password)


class NodeIn(Schema):
    name: str
    url: str
    username: str = ""
    password: str = Field("", json_schema_extra={"writeOnly": True})
    tags: list[str] = []
    weight: float = 1.0
    capacity: int = 4
    enabled: bool = True


class NodePatch(Schema):
    tags: list[str] | None = None
    weight: float | None = None
    capacity: int | None = None
    enabled: bool | None = None
    draining: bool | None = None
    username: str | None = None
    password: str | None = Field(None, json_schema_extra={"writeOnly": True})


class NodeRegisterIn(Schema):
    name: str
    url: str
    max_proc: int = Field(4, ge=1)
    tags: list[str] = []
    scrapyd_version: str = ""
    username: str = ""
    password: str = Field("", json_schema_extra={"writeOnly": True})


class SyncOut(Schema):
    node: str
    ok: bool
    message: str
    deployed: list[str]
    present: list[str]
    removed: list[str]
    missing: list[str]
    failed: list[NodeResultOut]


class NodeRegisterOut(Schema):
    node: NodeOut
    created: bool
    sync: SyncOut | None = None


# --- projects and versions ---------------------------------------------------------------------
class NodeResultOut(Schema):
    node: str
    ok: bool
    action: str
    message: str
    unreachable: bool


class DeploymentOut(Schema):
    node: str
    state: str
    message: str
    updated_at: datetime


class VersionOut(Schema):
    project: str
    version: str
    sha256: str
    size: int
    spiders: list[str]
    current: bool
    created_at: datetime
    deleted_at: datetime | None
    deployments: list[DeploymentOut]


class ProjectOut(Schema):
    name: str
    current_version: str | None
    latest_version: str | None
    versions: int
    spiders: list[str]
    created_at: datetime
    share_weight: float
    max_concurrent: int | None
    spider_caps: dict[str, int]


class ProjectDetailOut(ProjectOut):
    version_list: list[VersionOut]


class DeployOut(Schema):
    project: str
    version: str
    created: bool
    current: bool
    ok: bool
    message: str
    spiders: list[str]
    nodes: list[NodeResultOut]


class RollbackIn(Schema):
    version: str


class DeployIn(Schema):
    nodes: list[str] | None = None


# --- jobs ----------------------------------------------------------------------------------------
class JobOut(Schema):
    id: int
    run: int
    task: str | None
    attempt: int
    shard: int
    project: str
    spider: str
    version: str
    node: str | None
    scrapyd_job_id: str
    state: str
    reason: str
    priority: float
    # Why a queued job has not started yet ("" otherwise); docs/QUEUE.md.
    waiting_reason: str
    cause: str
    exit_status: int | None
    finish_reason: str
    items: int
    pages: int
    errors: int
    cancel_requested: bool
    log_url: str
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    last_heartbeat: datetime | None


class JobDetailOut(JobOut):
    args: dict[str, Any]
    settings: dict[str, Any]
    stats: dict[str, Any]
    not_before: datetime | None
    retry_of: int | None
    retried_by: int | None
    reported_final: bool
    monitor_report: dict[str, Any]


class JobQueryIn(Schema):
    """The job list's filters and paging (``controlplane.jobs.listing`` for the filters)."""

    state: str | None = Field(None, description="one state or several, comma-separated")
    project: str | None = Field(None, description="a project's name")
    spider: str | None = None
    task: str | None = Field(None, description="a task's name")
    node: str | None = Field(None, description="a node's name")
    run: int | None = Field(None, description="a run's id")
    active: bool | None = Field(None, description="only jobs in flight (true) or ended (false)")
    limit: int = Field(50, description=f"jobs per page, 1 to {MAX_JOB_PAGE} (clamped)")
    cursor: str | None = Field(
        None,
        description="next_cursor of the previous page: pages stay fast however deep; "
        "cannot be combined with offset",
    )
    offset: int = Field(
        0,
        le=MAX_JOB_OFFSET,
        description="jobs to skip, for older clients: costs grow with the offset (every skipped "
        f"job is read), so at most {MAX_JOB_OFFSET:,}; page deeper with cursor",
    )
    count: Literal["capped", "exact"] = Field(
        "capped",
        description=f"capped: count is exact up to {JOB_COUNT_CAP:,} (cheap at any size); "
        "exact: counts every matching job, which takes time in proportion to their number",
    )


class JobListOut(Schema):
    count: int = Field(
        description=f"matching jobs; with count=capped at most {JOB_COUNT_CAP:,}, see count_exact"
    )
    count_exact: bool = Field(
        description=f"false when more than {JOB_COUNT_CAP:,} jobs match and count says only "
        "that many (ask count=exact for the total)"
    )
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="pass as cursor for the next (older) page; null on the last page"
    )
    next: str | None = Field(
        description="the URL of the next page (these filters, next_cursor); null on the last page"
    )


class JobActionOut(Schema):
    ok: bool
    message: str
    job: JobDetailOut
    retry: JobDetailOut | None = None


# --- tokens --------------------------------------------------------------------------------------
class TokenIn(Schema):
    name: str
    role: Literal["admin", "operator", "viewer", "node"] = "operator"


class TokenOut(Schema):
    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    last_used: datetime | None
    revoked: bool


class TokenCreatedOut(TokenOut):
    secret: str


# --- audit trail ---------------------------------------------------------------------------------
class AuditQueryIn(Schema):
    actor: str = Field("", description="part of the actor's name (a user or a token)")
    action: str = Field("", description="an action (task.update) or its area (task)")
    target: str = Field("", description="part of the target's name")
    since: datetime | None = Field(None, description="entries at or after this time")
    until: datetime | None = Field(None, description="entries before this time")
    cursor: str | None = Field(None, description="next_cursor of the previous page")
    limit: int = Field(50, ge=1, le=MAX_AUDIT_PAGE, description="entries per page")


class AuditEntryOut(Schema):
    id: int
    at: datetime
    actor_kind: str = Field(description="user, token, anonymous or system")
    actor: str
    action: str = Field(description="e.g. login, task.update, token.create")
    target: str
    detail: dict[str, Any] = Field(
        description="what the action touched; a change lists {field: [old, new]} under changes"
    )
    ip: str | None


class AuditPageOut(Schema):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(
        description="pass as cursor for the next (older) page; null on the last page"
    )


# --- spider reports ------------------------------------------------------------------------------
class ReportIn(Schema):
    event: Literal["started", "heartbeat", "finished"]
    stats: dict[str, Any] = {}
    finish_reason: str | None = None


class ReportOut(Schema):
    action: Literal["continue", "stop"]
    reason: str = ""


SyncOut.model_rebuild()
NodeRegisterOut.model_rebuild()
