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

from controlplane.refusals import Refused

DEFAULT_PAGE_SIZE = 50


@dataclass
class Page:
    rows: list[Any]
    next_cursor: str | None
    first: bool


def encode(at: datetime, pk: int) -> str:
    return f"{at.isoformat()}_{pk}"


def decode(cursor: str) -> tuple[datetime, int] | None:
    # A cursor pasted into a URL unencoded comes back with its zone's "+" read as a space.
    at_text, _, pk_text = cursor.replace(" ", "+").rpartition("_")
    at = parse_datetime(at_text) if at_text else None
    if at is None or not pk_text.isdigit():
        return None
    return at, int(pk_text)


def require_valid(cursor: str | None) -> None:
    """Refuse (400) a cursor that is not one of ours, rather than read it as "from the start": a
    client following cursors would otherwise loop over the first page for ever."""
    if cursor and decode(cursor) is None:
        raise Refused(
            "malformed cursor",
            code="bad_request",
            status=400,
            fields={"cursor": ["use the next_cursor of a previous page"]},
        )


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


def offset_page(queryset: QuerySet, field: str, offset: int, size: int = DEFAULT_PAGE_SIZE) -> Page:
    """The page ``offset`` rows down, for clients that still page by offset.

    The skipped rows cost an index scan of their ids only (``(field, id)`` is the index the
    order uses), not whole rows and their joins; only the page's own rows are read in full. Still
    O(offset): deep pages belong to the cursor.
    """
    ordered = queryset.order_by(f"-{field}", "-pk")
    ids = list(ordered.values_list("pk", flat=True)[offset : offset + size + 1])
    by_id = {row.pk: row for row in ordered.filter(pk__in=ids)}
    rows = [by_id[pk] for pk in ids if pk in by_id]
    return _cut(rows, field, size, first=offset == 0)


def capped_count(queryset: QuerySet, cap: int) -> tuple[int, bool]:
    """``(count, exact)``: the exact count up to ``cap`` (reading at most ``cap + 1`` rows'
    ids), else ``(cap, False)``. A plain ``COUNT(*)`` reads every match, which grows with the
    table."""
    counted = queryset.order_by().values("pk")[: cap + 1].count()
    return (counted, True) if counted <= cap else (cap, False)
