"""Catching a node up: what every node must hold, compared with what the node really holds.

A node that joins or comes back (an emptied eggs dir, a node that was down during a deploy) is
judged by its own ``listversions.json``, never by our records alone. What "must hold" means is
asked of the apps above (:mod:`controlplane.deploys.usage`): current versions, and whatever tasks
pin or queued jobs wait for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.utils import timezone

from controlplane.deploys import usage
from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.deploys.nodecalls import NodeResult, push, record, remove, spiders_from, summarize
from controlplane.lib.scrapyd import ScrapydError
from controlplane.nodes.models import Node
from controlplane.nodes.usage import NodeUser

logger = logging.getLogger(__name__)


@dataclass
class SyncOutcome:
    """What ``sync_node`` found and did on one node."""

    node: str
    ok: bool = True
    message: str = ""
    deployed: list[str] = field(default_factory=list)  # "project version" pushed now
    present: list[str] = field(default_factory=list)  # already there
    failed: list[NodeResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # deleted versions cleaned off the node
    missing: list[str] = field(default_factory=list)  # recorded as deployed, but gone


def versions_needed() -> list[Version]:
    """What every node must hold: current versions, and what the apps above need (versions
    pinned by enabled tasks, versions of jobs still waiting for a node)."""
    ids = set(
        Project.objects.filter(current_version__isnull=False).values_list(
            "current_version", flat=True
        )
    )
    ids |= usage.needed_version_ids()
    return list(
        Version.objects.filter(pk__in=ids, deleted_at__isnull=True).select_related("project")
    )


def sync_node(node: Node) -> SyncOutcome:
    """Bring a node that joined or came back up to date, judged by what it reports.

    Deploys every needed version its ``listversions.json`` lacks, records versions it really
    holds, marks versions we thought it had but it lost (an emptied eggs dir) as removed so no
    job is sent there for them, and deletes versions that were deleted while it was away.
    """
    outcome = SyncOutcome(node=node.name)
    client = node.client()
    needed = versions_needed()
    cleaned = NodeDeployment.objects.filter(node=node, state=NodeDeployment.State.REMOVED)
    tombstones = list(
        Version.objects.filter(deleted_at__isnull=False)
        .exclude(pk__in=cleaned.values("version"))
        .select_related("project")
    )
    recorded = list(
        NodeDeployment.objects.filter(node=node, state=NodeDeployment.State.DEPLOYED)
        .select_related("version__project")
        .exclude(version__deleted_at__isnull=False)
    )
    projects = {v.project.name for v in needed} | {v.project.name for v in tombstones}
    projects |= {d.version.project.name for d in recorded}

    on_node: dict[str, set[str]] = {}
    try:
        for name in sorted(projects):
            on_node[name] = set(client.listversions(name))
    except ScrapydError as exc:
        outcome.ok = False
        outcome.message = f"cannot list versions on {node.name}: {summarize(str(exc))}"
        logger.warning("sync of node %s failed: %s", node.name, outcome.message)
        return outcome

    # Records that no longer match the node: it lost them (restart with an empty eggs dir).
    for deployment in recorded:
        version = deployment.version
        if version.version not in on_node.get(version.project.name, set()):
            outcome.missing.append(str(version))
            NodeDeployment.objects.filter(pk=deployment.pk).update(
                state=NodeDeployment.State.REMOVED,
                message="not on the node any more (listversions.json)",
                updated_at=timezone.now(),
            )

    for version in needed:
        label = f"{version.project.name} {version.version}"
        if version.version in on_node.get(version.project.name, set()):
            outcome.present.append(label)
            record(version, [NodeResult(node.name, node.pk, True, "present", action="check")])
            continue
        result = push(node, version.project.name, version.version, bytes(version.egg))
        record(version, [result])
        if result.ok:
            outcome.deployed.append(label)
            if not version.spiders:
                spiders = spiders_from([node], version.project.name, version.version)
                if spiders:
                    version.spiders = spiders
                    version.save(update_fields=["spiders"])
        else:
            outcome.failed.append(result)

    for version in tombstones:
        if version.version in on_node.get(version.project.name, set()):
            result = remove(node, version.project.name, version.version)
            record(version, [result])
            if result.ok:
                outcome.removed.append(f"{version.project.name} {version.version}")
            else:
                outcome.failed.append(result)
        else:
            record(
                version, [NodeResult(node.name, node.pk, True, "not on the node", action="delete")]
            )

    outcome.ok = not outcome.failed
    outcome.message = (
        f"{node.name}: {len(outcome.deployed)} deployed, {len(outcome.present)} present, "
        f"{len(outcome.failed)} failed, {len(outcome.removed)} removed"
    )
    if outcome.failed:
        logger.warning("sync of node %s incomplete: %s", node.name, outcome.message)
    elif outcome.deployed or outcome.removed or outcome.missing:
        logger.info("synced node %s: %s", node.name, outcome.message)
    return outcome


def _catch_up(node: Node) -> str:
    outcome = sync_node(node)
    return outcome.message


# A node added or taken back into service receives the versions it lacks at once.
CATCHES_NODES_UP = NodeUser("deploys", catch_up=_catch_up)
