"""Typed items. Every item has a stable id: the Kafka message key and the de-duplication handle."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class BookItem:
    """One book from a shop's detail page."""

    upc: str
    title: str
    price: float
    url: str
    rating: int | None = None
    stock: int | None = None
    currency: str = "GBP"
    crawled_at: str = field(default_factory=_now)

    @property
    def stable_id(self) -> str:
        return self.upc


def stable_id(item: object) -> str | None:
    """The item's stable id if it declares one (a ``stable_id`` attribute or an ``id`` field)."""
    value = getattr(item, "stable_id", None)
    if value is None and isinstance(item, dict):
        value = item.get("id")
    return None if value is None else str(value)
