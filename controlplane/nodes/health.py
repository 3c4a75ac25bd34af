"""Health checks of Scrapyd nodes, and bringing a returning node up to date.

A check is one ``daemonstatus.json`` call with the node's bounded timeout; its outcome is folded
into the node's state by :meth:`Node.record_check` (up, degraded when slow or failing, down after
several failures in a row). A node that joins or comes back gets the current versions deployed
before it is given work, so it never refuses a job for a missing egg.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from controlplane.nodes.models import Node
from controlplane.scrapyd import ScrapydClient, ScrapydError

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


def sync_returning_node(node: Node) -> bool:
    """Deploy the current versions to a node that (re)joined; False if that is not possible.

    ``deploys.services.sync_node`` is looked up at call time so that health checks keep working
    on an installation without it. A failed sync is logged and retried the next time the node
    comes back; the dispatcher only sends a node versions it has, so nothing breaks meanwhile.
    """
    try:
        services = importlib.import_module("controlplane.deploys.services")
    except ImportError:
        return False
    sync_node = getattr(services, "sync_node", None)
    if sync_node is None:
        return False
    try:
        sync_node(node)
    except Exception:
        logger.exception("could not bring node %s up to date", node.name)
        return False
    return True
