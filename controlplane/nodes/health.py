"""Health checks of Scrapyd nodes.

A check is one ``daemonstatus.json`` call with the node's bounded timeout; its outcome is folded
into the node's state by :meth:`Node.record_check` (up, degraded when slow or failing, down after
several failures in a row).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from controlplane.lib.scrapyd import ScrapydClient, ScrapydError
from controlplane.nodes.models import Node

logger = logging.getLogger(__name__)


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
        return HealthCheck(False, old, new, latency, error=str(exc))
    latency = time.monotonic() - started
    old, new = node.record_check(ok=True, latency=latency, status=status)
    if new != old:
        logger.info("node %s is %s (was %s), %.3f s", node.name, new, old, latency)
    return HealthCheck(True, old, new, latency, status)
