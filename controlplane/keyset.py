"""Keyset pagination: pages stay fast however deep, because no query ever skips rows.

A page is ordered by ``(-<time field>, -id)``; the cursor is the last row's pair. ``OFFSET`` would
make the database read and drop every earlier row, which is what gets slow at page 5,000.
In the base layer, so the domain services that answer both faces (the dashboard's lists and the
REST API's cursors) page the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

DEFAULT_PAGE_SIZE = 50


@dataclass
class Page:
    rows: list[Any]
    next_cursor: str | None
    first: bool


def encode(at: datetime, pk: int) -> str:
    return f"{at.isoformat()}_{pk}"


def decode(cursor: str) -> tuple[datetime, int] | None:
    at_text, _, pk_text = cursor.rpartition("_")
    at = parse_datetime(at_text) if at_text else None
    if at is None or not pk_text.isdigit():
        return None
    return at, int(pk_text)


def after_cursor(queryset: QuerySet, field: str, after: tuple[datetime, int] | None) -> QuerySet:
    """``queryset`` from just past ``after`` on, newest first."""
    if after is not None:
        at, pk = after
        # ``field <= at`` is implied by the OR, but stated alone it bounds the index range scan:
        # without it SQLite reads both OR branches separately and sorts them (slow when deep).
        queryset = queryset.filter(**{f"{field}__lte": at}).filter(
            Q(**{f"{field}__lt": at}) | Q(pk__lt=pk)
        )
    return queryset.order_by(f"-{field}", "-pk")


def _cut(rows: list[Any], field: str, size: int, *, first: bool) -> Page:
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = encode(getattr(rows[-1], field), rows[-1].pk) if more and rows else None
    return Page(rows, next_cursor, first=first)


def page(queryset: QuerySet, field: str, cursor: str | None, size: int = DEFAULT_PAGE_SIZE) -> Page:
    """The page after ``cursor`` (the first page without one, or with a malformed one)."""
    after = decode(cursor) if cursor else None
    rows = list(after_cursor(queryset, field, after)[: size + 1])
    return _cut(rows, field, size, first=after is None)


def merged_page(
    querysets: list[QuerySet], field: str, cursor: str | None, size: int = DEFAULT_PAGE_SIZE
) -> Page:
    """One page over the union of ``querysets`` (which must not overlap), in the same order.

    For ``state IN (a, b, c)``: one query per state, each an index range scan that stops after
    ``size + 1`` rows, merged here; one ``IN`` query would have to sort every match first.
    """
    after = decode(cursor) if cursor else None
    rows = [row for qs in querysets for row in after_cursor(qs, field, after)[: size + 1]]
    rows.sort(key=lambda row: (getattr(row, field), row.pk), reverse=True)
    return _cut(rows, field, size, first=after is None)
