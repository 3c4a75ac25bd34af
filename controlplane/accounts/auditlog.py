"""Reading the audit trail: the filters and keyset paging the dashboard and the REST API share.

Newest first, by ``(at, id)`` (the ``audit_newest`` index), so a page deep in a long trail
costs the same as the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane import keyset
from controlplane.accounts.models import AuditEntry
from controlplane.refusals import Refused

MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class AuditFilter:
    """What to look for; empty values match everything.

    ``actor`` and ``target`` match any part of the name (case-insensitive); ``action`` matches
    the action itself or its area (``task`` finds ``task.update`` and ``task.delete``);
    ``since`` is inclusive and ``until`` exclusive.
    """

    actor: str = ""
    action: str = ""
    target: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> None:
        if self.since and self.until and _aware(self.since) >= _aware(self.until):
            raise Refused("the time range is empty", fields={"until": ["must be later than since"]})


def entries(query: AuditFilter) -> QuerySet[AuditEntry]:
    """The entries matching ``query``, unordered (the pager orders them)."""
    query.check()
    rows = AuditEntry.objects.all()
    if actor := query.actor.strip():
        rows = rows.filter(actor__icontains=actor)
    if action := query.action.strip().rstrip("."):
        rows = rows.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    if target := query.target.strip():
        rows = rows.filter(target__icontains=target)
    if query.since:
        rows = rows.filter(at__gte=_aware(query.since))
    if query.until:
        rows = rows.filter(at__lt=_aware(query.until))
    return rows


def _aware(moment: datetime) -> datetime:
    """A time without a zone is read in the control plane's zone (settings.TIME_ZONE)."""
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def search(
    query: AuditFilter, cursor: str | None = None, size: int = keyset.DEFAULT_PAGE_SIZE
) -> keyset.Page:
    """One page of matching entries, newest first, after ``cursor`` (a previous ``next_cursor``).

    A cursor that is not one of ours is refused (:func:`controlplane.keyset.require_valid`).
    """
    keyset.require_valid(cursor)
    size = max(1, min(size, MAX_PAGE_SIZE))
    return keyset.page(entries(query), "at", cursor, size)
