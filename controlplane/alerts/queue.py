"""The receiver of ``event_raised``: one INSERT, nothing else.

It runs inside the emitter's transaction (the loops call ``raise_event`` next to the state change
they report), so it must never wait for a network call or read more than it writes. The sender
loop (:mod:`controlplane.alerts.routing`, :mod:`controlplane.alerts.sending`) does the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, transaction

from controlplane.alerts.models import AlertEvent
from controlplane.events import Event

logger = logging.getLogger(__name__)


def enqueue(sender: Any, event: Event, **_: Any) -> AlertEvent | None:
    """Queue ``event``. A failed insert is logged and dropped: an alert is never worth failing
    the state change it reports (the savepoint keeps the emitter's transaction usable)."""
    try:
        with transaction.atomic():
            return _insert(event)
    except DatabaseError:
        logger.exception("could not queue the %s event %r", event.kind, event.summary)
        return None


def _insert(event: Event) -> AlertEvent:
    return AlertEvent.objects.create(
        kind=event.kind,
        summary=event.summary,
        detail=event.detail,
        group_key=event.group_key[:200],
        project_id=event.project_id,
        task_id=event.task_id,
        node_id=event.node_id,
        job_id=event.job_id,
        run_id=event.run_id,
    )
