"""Deploys: storing eggs, pushing them to every node, and rollback.

The REST API, the admin and the ``crawlfleet deploy`` command call these functions, so the rules
live in one place (catching a returning node up is :mod:`controlplane.deploys.sync`, deletion
:mod:`controlplane.deploys.removal`):

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from controlplane.accounts import audit
from controlplane.deploys.models import Project, Version
from controlplane.deploys.nodecalls import (
    NodeResult,
    has,
    parallel,
    push,
    record,
    schedulable_nodes,
    spiders_from,
)
from controlplane.lib.eggs import InvalidEgg, inspect_egg
from controlplane.nodes.models import Node
from controlplane.refusals import Refused
from controlplane.validators import validate_name, validate_version

logger = logging.getLogger(__name__)


class DeployError(Refused):
    """A deploy operation was refused, with what each node said when nodes were involved."""

    def __init__(self, message: str, *, results: Sequence[NodeResult] = (), **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.results = list(results)


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


def _validation(exc: ValidationError, name: str) -> DeployError:
    return DeployError(" ".join(exc.messages), fields={name: list(exc.messages)})


# --- public operations -----------------------------------------------------------------------------
def version_of_egg(egg_bytes: bytes) -> str:
    """The version an egg declares, for uploads that give none; it must be digits only."""
    try:
        declared = inspect_egg(egg_bytes).version or ""
    except InvalidEgg as exc:
        raise DeployError(
            f"invalid egg: {exc}", code="invalid_egg", fields={"egg": [str(exc)]}
        ) from None
    try:
        validate_version(declared)
    except ValidationError:
        raise DeployError(
            f"no version given and the egg's own version {declared!r} is not numeric",
            fields={"version": ["required (digits only)"]},
        ) from None
    return declared


def upload_version(
    project_name: str, version: str, egg_bytes: bytes, actor: audit.Actor | None = None
) -> DeployOutcome:
    """Validate, store and deploy a new version; audited with each node's outcome."""
    outcome = _upload_version(project_name, version, egg_bytes)
    audit_outcome(actor, "deploy", outcome)
    return outcome


def audit_outcome(actor: audit.Actor | None, action: str, outcome: DeployOutcome) -> None:
    audit.record(
        actor,
        action,
        str(outcome.version),
        message=outcome.message,
        accepted=[r.node for r in outcome.accepted],
        failed={r.node: r.message for r in outcome.failed},
    )


def _upload_version(project_name: str, version: str, egg_bytes: bytes) -> DeployOutcome:
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
    results = parallel(nodes, lambda n: push(n, project_name, version, egg_bytes))
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

    record(row, results)
    by_id = {n.pk: n for n in nodes}
    spiders = spiders_from([by_id[r.node_id] for r in accepted], project_name, version)
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
    version: Version,
    nodes: Sequence[Node] | None = None,
    *,
    only_missing: bool = False,
    actor: audit.Actor | None = None,
) -> list[NodeResult]:
    """Push a stored version to ``nodes`` (default: every schedulable node), concurrently.

    With ``only_missing``, nodes whose ``listversions.json`` already shows it are left alone.
    Audited when an ``actor`` asked for it; the operations here that call it audit themselves.
    """
    if version.deleted_at is not None:
        raise DeployError(f"version {version} was deleted", code="conflict", status=409)
    nodes = list(schedulable_nodes() if nodes is None else nodes)
    project = version.project.name
    results: list[NodeResult] = []
    if only_missing:
        checks = parallel(nodes, lambda n: has(n, project, version.version))
        # Present: nothing to do. Unreachable: pushing would only time out a second time.
        settled = {r.node_id for r in checks if r.ok or r.unreachable}
        results += [r for r in checks if r.node_id in settled]
        nodes = [n for n in nodes if n.pk not in settled]
    egg = bytes(version.egg)
    results += parallel(nodes, lambda n: push(n, project, version.version, egg))
    record(version, results)
    if not version.spiders:
        accepted = {r.node_id for r in results if r.ok}
        spiders = spiders_from(
            [n for n in Node.objects.filter(pk__in=accepted)], project, version.version
        )
        if spiders:
            version.spiders = spiders
            version.save(update_fields=["spiders"])
    if actor is not None:
        audit_outcome(actor, "redeploy", DeployOutcome(version, results, created=False))
    return results


def rollback(project: Project, version: Version, actor: audit.Actor | None = None) -> DeployOutcome:
    """Make ``version`` current (see :func:`_rollback`); audited."""
    outcome = _rollback(project, version)
    audit_outcome(actor, "rollback", outcome)
    return outcome


def _rollback(project: Project, version: Version) -> DeployOutcome:
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
