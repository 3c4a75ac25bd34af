"""Bodies of the queue's settings: a run's priority, a project's share and caps, tag caps.

Types only; the ranges are the domain services' (422 with a message per field)."""

from __future__ import annotations

from ninja import Schema


class RunNowIn(Schema):
    priority: float | None = None


class ProjectQueueIn(Schema):
    share_weight: float | None = None
    max_concurrent: int | None = None
    spider_caps: dict[str, int] | None = None


class TagCapIn(Schema):
    max_concurrent: int


class TagCapOut(Schema):
    tag: str
    max_concurrent: int
