"""Deploys: storing eggs, pushing them to every node, rollback, deletion and catching nodes up.

The REST API, the Scrapyd-compatible API, the admin, the CLI and the poller all call these
functions, so the rules live in one place:

- A version is digits only and **unique per project**; it need not be greater than the others,
  because every run pins ``_version`` and the current version is an explicit pointer, never
  Scrapyd's "last of sorted()". Re-uploading the very same bytes under an existing version is
  idempotent (it re-deploys where missing); different bytes under a taken number are a conflict,
  since nodes would disagree about what that version is. Numbers of deleted versions are never
  reused.
- An egg is validated without executing it (``inspect_egg``) before anything is stored, then
  pushed to all schedulable nodes concurrently. A node that rejects it gets it deleted again
  (Scrapyd keeps a rejected egg). If no node accepts it, nothing is kept: the version row (and a
  project created for it) is removed and the nodes' messages are returned.
- Node HTTP calls run in threads; every database write happens in the calling thread, so the
  functions work the same under SQLite and PostgreSQL and never leak connections.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.eggs import InvalidEgg, inspect_egg
from controlplane.nodes.models import Node
from controlplane.scrapyd import ScrapydError
from controlplane.validators import validate_name, validate_version

logger = logging.getLogger(__name__)

MAX_PARALLEL_NODES = 16
# addversion.json makes the node import the project to count spiders: slower than other calls.
DEPLOY_TIMEOUT_FLOOR = 30.0

T = TypeVar("T")


class DeployError(Exception):
    """A deploy operation was refused; ``status`` is the HTTP status an API should answer."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        status: int = 422,
        fields: dict[str, list[str]] | None = None,
        results: Sequence[NodeResult] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = fields or {}
        self.results = list(results)


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


@dataclass
class DeployOutcome:
    version: Version
    results: list[NodeResult] = field(default_factory=list)
    created: bool = True
    message: str = ""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def accepted(self) -> list[NodeResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[NodeResult]:
        return [r for r in self.results if not r.ok]


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


def summarize(message: str, limit: int = 500) -> str:
    """The line of a Scrapyd error that says what went wrong (its messages carry tracebacks)."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[-1] if len(lines) > 1 and "Traceback" in message else " ".join(lines)
    return text[:limit]


def deploy_timeout() -> float:
    return max(
        float(getattr(settings, "CRAWLFLEET_DEPLOY_TIMEOUT", 0) or 0),
        settings.CRAWLFLEET_NODE_TIMEOUT * 6,
        DEPLOY_TIMEOUT_FLOOR,
    )


def schedulable_nodes() -> list[Node]:
    return list(Node.objects.filter(enabled=True, state__in=[Node.State.UP, Node.State.DEGRADED]))


def _parallel(items: Sequence[T], work: Callable[[T], NodeResult]) -> list[NodeResult]:
    """Run ``work`` (HTTP only, no database) for every item concurrently, keeping the order."""
    if not items:
        return []
    if len(items) == 1:
        return [work(items[0])]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_NODES, len(items))) as pool:
        return list(pool.map(work, items))


# --- talking to one node (thread-safe: no database access) ----------------------------------------
def _push(node: Node, project: str, version: str, egg: bytes) -> NodeResult:
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


def _remove(node: Node, project: str, version: str) -> NodeResult:
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


def _has(node: Node, project: str, version: str) -> NodeResult:
    """Does the node really hold the version (listversions.json, not our records)?"""
    try:
        present = version in node.client().listversions(project)
    except ScrapydError as exc:
        return NodeResult(node.name, node.pk, False, summarize(str(exc)), exc.unreachable, "check")
    return NodeResult(
        node.name, node.pk, present, "present" if present else "missing", False, "check"
    )


def _spiders_from(nodes: Iterable[Node], project: str, version: str) -> list[str] | None:
    for node in nodes:
        try:
            return sorted(node.client().listspiders(project, version))
        except ScrapydError as exc:
            logger.warning("listspiders of %s %s on %s failed: %s", project, version, node, exc)
    return None


# --- bookkeeping (database, calling thread only) -------------------------------------------------
def _record(version: Version, results: Iterable[NodeResult]) -> None:
    """One NodeDeployment per node: what the dispatcher trusts when it picks nodes."""
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


def _validation(exc: ValidationError, name: str) -> DeployError:
    return DeployError(" ".join(exc.messages), fields={name: list(exc.messages)})


# --- public operations -----------------------------------------------------------------------------
def upload_version(project_name: str, version: str, egg_bytes: bytes) -> DeployOutcome:
    """Validate, store and deploy a new version to every schedulable node; make it current.

    Raises DeployError: 422 for an invalid name, version or egg (nothing stored) or when every
    node rejects the egg (nothing kept, the nodes' messages attached), 409 when the version
    number is taken by a different egg, 503 when no node could be reached at all.
    With no schedulable node, the version is stored and becomes current; nodes receive it when
    they join (``sync_node``).
    """
    try:
        validate_name(project_name)
    except ValidationError as exc:
        raise _validation(exc, "project") from None
    try:
        validate_version(version)
    except ValidationError as exc:
        raise _validation(exc, "version") from None
    try:
        info = inspect_egg(egg_bytes)
    except InvalidEgg as exc:
        raise DeployError(
            f"invalid egg: {exc}", code="invalid_egg", fields={"egg": [str(exc)]}
        ) from None
    egg_bytes = bytes(egg_bytes)

    existing = Version.objects.filter(project__name=project_name, version=version).first()
    if existing is not None:
        return _reupload(existing, info.sha256)

    with transaction.atomic():
        project, project_created = Project.objects.get_or_create(name=project_name)
        try:
            with transaction.atomic():
                row = Version.objects.create(
                    project=project,
                    version=version,
                    egg=egg_bytes,
                    sha256=info.sha256,
                    size=len(egg_bytes),
                )
        except IntegrityError:
            raise DeployError(
                f"version {version} of {project_name} was uploaded concurrently",
                code="conflict",
                status=409,
                fields={"version": ["already exists"]},
            ) from None

    nodes = schedulable_nodes()
    results = _parallel(nodes, lambda n: _push(n, project_name, version, egg_bytes))
    accepted = [r for r in results if r.ok]
    if nodes and not accepted:
        with transaction.atomic():
            row.delete()
            if project_created and not project.versions.exists():
                project.delete()
        every = all(r.unreachable for r in results)
        details = "; ".join(f"{r.node}: {r.message}" for r in results)
        if every:
            summary = f"no node could be reached to deploy {project_name} {version}"
        elif any(r.unreachable for r in results):
            summary = f"no node accepted {project_name} {version}"
        else:
            summary = f"every node rejected {project_name} {version}"
        raise DeployError(
            f"{summary}; nothing was stored: {details}",
            code="unreachable" if every else "rejected",
            status=503 if every else 422,
            fields={} if every else {"egg": [details]},
            results=results,
        )

    _record(row, results)
    by_id = {n.pk: n for n in nodes}
    spiders = _spiders_from([by_id[r.node_id] for r in accepted], project_name, version)
    if spiders is not None:
        row.spiders = spiders
        row.save(update_fields=["spiders"])
    Project.objects.filter(pk=project.pk).update(current_version=row)
    project.current_version = row
    message = (
        "stored; no node is available yet, nodes receive it when they join"
        if not nodes
        else f"deployed to {len(accepted)} of {len(nodes)} nodes"
    )
    return DeployOutcome(row, results, created=True, message=message)


def _reupload(existing: Version, sha256: str) -> DeployOutcome:
    """The same bytes again: deploy where missing. Other bytes under a taken number: refuse."""
    label = f"{existing.project.name} {existing.version}"
    if existing.deleted_at is not None:
        raise DeployError(
            f"version {label} was deleted; version numbers are never reused",
            code="conflict",
            status=409,
            fields={"version": ["was deleted; use a new version number"]},
        )
    if existing.sha256 != sha256:
        raise DeployError(
            f"version {label} already exists with a different egg; upload under a new version",
            code="conflict",
            status=409,
            fields={"version": ["already exists with a different egg"]},
        )
    results = deploy_version(existing, only_missing=True)
    return DeployOutcome(
        existing, results, created=False, message="already stored; deployed where missing"
    )


def deploy_version(
    version: Version, nodes: Sequence[Node] | None = None, *, only_missing: bool = False
) -> list[NodeResult]:
    """Push a stored version to ``nodes`` (default: every schedulable node), concurrently.

    With ``only_missing``, nodes whose ``listversions.json`` already shows it are left alone.
    """
    if version.deleted_at is not None:
        raise DeployError(f"version {version} was deleted", code="conflict", status=409)
    nodes = list(schedulable_nodes() if nodes is None else nodes)
    project = version.project.name
    results: list[NodeResult] = []
    if only_missing:
        checks = _parallel(nodes, lambda n: _has(n, project, version.version))
        # Present: nothing to do. Unreachable: pushing would only time out a second time.
        settled = {r.node_id for r in checks if r.ok or r.unreachable}
        results += [r for r in checks if r.node_id in settled]
        nodes = [n for n in nodes if n.pk not in settled]
    egg = bytes(version.egg)
    results += _parallel(nodes, lambda n: _push(n, project, version.version, egg))
    _record(version, results)
    if not version.spiders:
        accepted = {r.node_id for r in results if r.ok}
        spiders = _spiders_from(
            [n for n in Node.objects.filter(pk__in=accepted)], project, version.version
        )
        if spiders:
            version.spiders = spiders
            version.save(update_fields=["spiders"])
    return results


def versions_needed() -> list[Version]:
    """What every node must hold: current versions, versions pinned by enabled tasks, and the
    versions of jobs still waiting for a node (a retry on an older version, say)."""
    from controlplane.jobs.models import Job  # jobs depends on deploys, not the reverse
    from controlplane.scheduling.models import Task

    ids = set(
        Project.objects.filter(current_version__isnull=False).values_list(
            "current_version", flat=True
        )
    )
    ids |= set(
        Task.objects.filter(enabled=True, version__isnull=False).values_list("version", flat=True)
    )
    ids |= set(Job.objects.filter(state=Job.State.QUEUED).values_list("version", flat=True))
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
            _record(version, [NodeResult(node.name, node.pk, True, "present", action="check")])
            continue
        result = _push(node, version.project.name, version.version, bytes(version.egg))
        _record(version, [result])
        if result.ok:
            outcome.deployed.append(label)
            if not version.spiders:
                spiders = _spiders_from([node], version.project.name, version.version)
                if spiders:
                    version.spiders = spiders
                    version.save(update_fields=["spiders"])
        else:
            outcome.failed.append(result)

    for version in tombstones:
        if version.version in on_node.get(version.project.name, set()):
            result = _remove(node, version.project.name, version.version)
            _record(version, [result])
            if result.ok:
                outcome.removed.append(f"{version.project.name} {version.version}")
            else:
                outcome.failed.append(result)
        else:
            _record(
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


def rollback(project: Project, version: Version) -> DeployOutcome:
    """Make ``version`` the one new runs use, deploying it first to nodes that lack it.

    The pointer only moves if at least one schedulable node holds the version afterwards (or
    there are no nodes at all), so a rollback never leaves runs with nowhere to go.
    """
    if version.project_id != project.pk:
        raise DeployError(
            f"version {version.version} belongs to another project",
            fields={"version": ["belongs to another project"]},
        )
    if version.deleted_at is not None:
        raise DeployError(
            f"version {version} was deleted",
            code="conflict",
            status=409,
            fields={"version": ["was deleted"]},
        )
    nodes = schedulable_nodes()
    results = deploy_version(version, nodes, only_missing=True)
    if nodes and not any(r.ok for r in results):
        details = "; ".join(f"{r.node}: {r.message}" for r in results)
        raise DeployError(
            f"could not deploy {version} to any node, the current version is unchanged: {details}",
            code="deploy_failed",
            status=409,
            results=results,
        )
    Project.objects.filter(pk=project.pk).update(current_version=version)
    project.current_version = version
    return DeployOutcome(version, results, created=False, message=f"{version} is now current")


def delete_version(version: Version) -> DeployOutcome:
    """Delete a version from every node (delversion.json), then its row.

    Refused (409) while it is the current version, pinned by a task, or used by active jobs.
    If jobs in history refer to it, or a node could not be reached, the row is kept as a
    tombstone without the egg: history stays intact and ``sync_node`` removes the egg from the
    unreachable node when it returns.
    """
    from controlplane.jobs.models import Job
    from controlplane.scheduling.models import Task

    project = version.project
    if project.current_version_id == version.pk:
        raise DeployError(
            f"{version} is the current version of {project.name}; roll back to another first",
            code="conflict",
            status=409,
        )
    pinned = sorted(Task.objects.filter(version=version).values_list("name", flat=True))
    if pinned:
        raise DeployError(
            f"{version} is pinned by task(s) {', '.join(pinned)}",
            code="conflict",
            status=409,
        )
    active = Job.objects.filter(version=version, state__in=Job.ACTIVE).count()
    if active:
        raise DeployError(
            f"{active} active job(s) use {version}; cancel them or wait",
            code="conflict",
            status=409,
        )

    nodes = list(Node.objects.all())
    results = _parallel(nodes, lambda n: _remove(n, project.name, version.version))
    _record(version, results)
    failed = [r for r in results if not r.ok]
    if failed or Job.objects.filter(version=version).exists():
        version.deleted_at = timezone.now()
        version.egg = b""
        version.save(update_fields=["deleted_at", "egg"])
        message = (
            f"deleted from {len(results) - len(failed)} of {len(results)} nodes; "
            "the rest are cleaned when they come back"
            if failed
            else f"deleted from {len(results)} nodes; kept in job history"
        )
    else:
        version.delete()
        message = f"deleted from {len(results)} nodes"
    return DeployOutcome(version, results, created=False, message=message)
