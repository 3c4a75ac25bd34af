"""Health checks of Scrapyd nodes.

A check is one ``daemonstatus.json`` call with the node's bounded timeout; its outcome is folded
into the node's state by :meth:`Node.record_check` (up, degraded when slow or failing, down after
several failures in a row).

Each check may also leave a :class:`HealthSample` for the node's history: at most one a minute
per node, and always one when the state changed. Several pollers check the same nodes, so the
sample is claimed first with a conditional ``UPDATE`` of the node's ``health_sampled_*`` columns;
only the poller whose update changed the row writes the sample.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from controlplane.lib.scrapyd import ScrapydClient, ScrapydError
from controlplane.nodes.models import HealthSample, Node

logger = logging.getLogger(__name__)

# One sample a minute is enough for a latency chart and an uptime figure, and small: a week of
# one node is about 10,000 rows.
SAMPLE_EVERY = timedelta(seconds=60)
KEEP_SAMPLES = timedelta(days=7)


@dataclass
class HealthCheck:
    ok: bool
    old: str
    new: str
    latency: float | None = None
    status: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def came_back(self) -> bool:
        """The node answers again after being down, or answers for the first time."""
        return self.ok and self.old in (Node.State.UNKNOWN, Node.State.DOWN)

    @property
    def went_down(self) -> bool:
        return self.new == Node.State.DOWN and self.old != Node.State.DOWN


def check(node: Node, client: ScrapydClient | None = None) -> HealthCheck:
    """One daemonstatus.json call, recorded on the node."""
    client = client or node.client()
    started = time.monotonic()
    try:
        status = client.daemonstatus()
    except ScrapydError as exc:
        latency = time.monotonic() - started
        old, new = node.record_check(ok=False, latency=latency, error=str(exc))
        if new != old:
            logger.warning("node %s is %s (was %s): %s", node.name, new, old, exc)
        result = HealthCheck(False, old, new, latency, error=str(exc))
    else:
        latency = time.monotonic() - started
        old, new = node.record_check(ok=True, latency=latency, status=status)
        if new != old:
            logger.info("node %s is %s (was %s), %.3f s", node.name, new, old, latency)
        result = HealthCheck(True, old, new, latency, status)
    try:
        sample(node, result)
    except Exception:  # the history is a view of the checks; never let it fail one
        logger.exception("could not record a health sample of node %s", node.name)
    return result


def claim_sample(node: Node, state: str, now: datetime) -> bool:
    """Win the right to write this check's sample: true for one caller a minute per node, and
    for one caller when the state differs from the last sample's."""
    due = (
        Q(health_sampled_at__isnull=True)
        | Q(health_sampled_at__lte=now - SAMPLE_EVERY)
        | ~Q(health_sampled_state=state)
    )
    claimed = Node.objects.filter(due, pk=node.pk).update(
        health_sampled_at=now, health_sampled_state=state
    )
    return claimed == 1


def sample(node: Node, check: HealthCheck) -> HealthSample | None:
    """Write the check into the node's history if it is due (see :func:`claim_sample`)."""
    now = timezone.now()
    # Most checks are not due: decide from the row this poll already read, and write only then,
    # so a poll cycle costs no extra write per node. The conditional update still arbitrates
    # between pollers that both found a sample due.
    last = node.health_sampled_at
    if last is not None and last > now - SAMPLE_EVERY and node.health_sampled_state == check.new:
        return None
    if not claim_sample(node, check.new, now):
        return None
    node.health_sampled_at, node.health_sampled_state = now, check.new
    row = HealthSample.objects.create(
        node=node,
        at=now,
        state=check.new,
        previous_state=check.old,
        changed=check.new != check.old,
        ok=check.ok,
        latency=check.latency,
        running=node.running if check.ok else 0,
        pending=node.pending if check.ok else 0,
        error=check.error[:500],
    )
    # The winner also drops what is past keeping: the (node, at) index makes this a short
    # range delete, about one row a minute.
    HealthSample.objects.filter(node=node, at__lt=now - KEEP_SAMPLES).delete()
    return row
