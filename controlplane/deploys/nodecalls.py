"""Talking to the nodes about versions: push, remove and check an egg on many nodes at once.

Every call here is HTTP only, safe on worker threads; :func:`record` is the one database write and
runs in the calling thread, so deploys behave the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment, Version
from controlplane.events import DEPLOY_FAILED, raise_event
from controlplane.lib.scrapyd import ScrapydError, summarize
from controlplane.nodes.models import Node

logger = logging.getLogger(__name__)

MAX_PARALLEL_NODES = 16
# addversion.json makes the node import the project to count spiders: slower than other calls.
DEPLOY_TIMEOUT_FLOOR = 30.0

T = TypeVar("T")


@dataclass
class NodeResult:
    """What one node did with one version."""

    node: str
    node_id: int
    ok: bool
    message: str = ""
    unreachable: bool = False
    action: str = "deploy"

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "ok": self.ok,
            "action": self.action,
            "message": self.message,
            "unreachable": self.unreachable,
        }


def deploy_timeout() -> float:
    return max(
        float(getattr(settings, "CRAWLFLEET_DEPLOY_TIMEOUT", 0) or 0),
        settings.CRAWLFLEET_NODE_TIMEOUT * 6,
        DEPLOY_TIMEOUT_FLOOR,
    )


def schedulable_nodes() -> list[Node]:
    return list(Node.objects.filter(enabled=True, state__in=[Node.State.UP, Node.State.DEGRADED]))


def parallel(items: Sequence[T], work: Callable[[T], NodeResult]) -> list[NodeResult]:
    """Run ``work`` (HTTP only, no database) for every item concurrently, keeping the order."""
    if not items:
        return []
    if len(items) == 1:
        return [work(items[0])]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_NODES, len(items))) as pool:
        return list(pool.map(work, items))


def push(node: Node, project: str, version: str, egg: bytes) -> NodeResult:
    """addversion.json; a rejected egg is deleted again, because Scrapyd stores it anyway."""
    client = node.client(timeout=deploy_timeout())
    try:
        reply = client.addversion(project, version, egg)
    except ScrapydError as exc:
        # Not there (good) or unreachable (sync_node finds out when it is back).
        with contextlib.suppress(ScrapydError):
            client.delversion(project, version)
        return NodeResult(node.name, node.pk, False, summarize(str(exc)), exc.unreachable)
    spiders = reply.get("spiders")
    note = f"{spiders} spiders" if spiders is not None else "deployed"
    return NodeResult(node.name, node.pk, True, note)


def remove(node: Node, project: str, version: str) -> NodeResult:
    """delversion.json where the node has the version; absent already counts as removed."""
    client = node.client()
    try:
        if version not in client.listversions(project):
            return NodeResult(node.name, node.pk, True, "not on the node", action="delete")
        client.delversion(project, version)
    except ScrapydError as exc:
        return NodeResult(
            node.name, node.pk, False, summarize(str(exc)), exc.unreachable, action="delete"
        )
    return NodeResult(node.name, node.pk, True, "deleted", action="delete")


def has(node: Node, project: str, version: str) -> NodeResult:
    """Does the node really hold the version (listversions.json, not our records)?"""
    try:
        present = version in node.client().listversions(project)
    except ScrapydError as exc:
        return NodeResult(node.name, node.pk, False, summarize(str(exc)), exc.unreachable, "check")
    return NodeResult(
        node.name, node.pk, present, "present" if present else "missing", False, "check"
    )


def spiders_from(nodes: Iterable[Node], project: str, version: str) -> list[str] | None:
    for node in nodes:
        try:
            return sorted(node.client().listspiders(project, version))
        except ScrapydError as exc:
            logger.warning("listspiders of %s %s on %s failed: %s", project, version, node, exc)
    return None


def record(version: Version, results: Iterable[NodeResult]) -> None:
    """One NodeDeployment per node: what the dispatcher trusts when it picks nodes; and one
    deploy_failed event for the nodes that did not take the version, in the same transaction."""
    results = list(results)
    with transaction.atomic():
        _record(version, results)
        # An unreachable node is caught up when it is back (and its node_down says enough).
        failed = [r for r in results if r.action == "deploy" and not r.ok and not r.unreachable]
        if failed:
            _raise_deploy_failed(version, failed)


def _raise_deploy_failed(version: Version, failed: list[NodeResult]) -> None:
    project = version.project
    names = ", ".join(r.node for r in failed)
    reason = failed[0].message or "rejected"
    raise_event(
        DEPLOY_FAILED,
        f"deploy of {project.name} {version.version} failed on {names}: {reason}",
        project_id=project.pk,
        node_id=failed[0].node_id if len(failed) == 1 else None,
        detail={
            "project": project.name,
            "version": version.version,
            "nodes": [r.as_dict() for r in failed],
        },
        group=f"deploy_failed:project:{project.pk}",
    )


def _record(version: Version, results: list[NodeResult]) -> None:
    for result in results:
        if result.action == "delete":
            state = NodeDeployment.State.REMOVED if result.ok else None
        elif result.action == "check":
            state = NodeDeployment.State.DEPLOYED if result.ok else None
        else:
            state = NodeDeployment.State.DEPLOYED if result.ok else NodeDeployment.State.FAILED
        if state is None:
            continue  # a failed delete or check tells nothing new: keep the record as it is
        row, created = NodeDeployment.objects.get_or_create(
            node_id=result.node_id,
            version=version,
            defaults={"state": state, "message": result.message[:4000], "attempts": 1},
        )
        if not created and result.action == "check" and row.state == state:
            continue  # confirmed as recorded: no write on every heartbeat
        if not created:
            NodeDeployment.objects.filter(pk=row.pk).update(
                state=state,
                message=result.message[:4000],
                attempts=F("attempts") + 1,
                updated_at=timezone.now(),
            )
