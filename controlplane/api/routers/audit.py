"""The audit trail (admin): who did what, when and from where, newest first, by cursor."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router

from controlplane.accounts import auditlog
from controlplane.api.auth import ADMIN
from controlplane.api.schemas import AuditPageOut, AuditQueryIn

router = Router(tags=["audit"])


@router.get("", response=AuditPageOut, auth=ADMIN, summary="Audit trail, newest first")
def list_audit(request: HttpRequest, filters: Query[AuditQueryIn]) -> dict:
    """Filters combine; times without a zone are UTC. Follow ``next_cursor`` until it is null."""
    query = auditlog.AuditFilter(
        actor=filters.actor,
        action=filters.action,
        target=filters.target,
        since=filters.since,
        until=filters.until,
    )
    page = auditlog.search(query, filters.cursor, filters.limit)
    return {"items": page.rows, "next_cursor": page.next_cursor}
