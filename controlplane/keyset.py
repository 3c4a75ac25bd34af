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


def page(queryset: QuerySet, field: str, cursor: str | None, size: int = DEFAULT_PAGE_SIZE) -> Page:
    """The page after ``cursor`` (the first page without one, or with a malformed one)."""
    after = decode(cursor) if cursor else None
    if after is not None:
        at, pk = after
        queryset = queryset.filter(Q(**{f"{field}__lt": at}) | Q(**{field: at, "pk__lt": pk}))
    rows = list(queryset.order_by(f"-{field}", "-pk")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = encode(getattr(rows[-1], field), rows[-1].pk) if more and rows else None
    return Page(rows, next_cursor, first=after is None)
