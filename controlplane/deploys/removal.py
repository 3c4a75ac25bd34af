"""Deleting versions and projects everywhere, as Scrapyd's ``delversion.json``/``delproject.json``.

Kept apart from uploads (:mod:`controlplane.deploys.services`) but under the same rules: every
face calls these, node calls run in threads, and every database write stays in the caller's.
"""

from __future__ import annotations

from django.utils import timezone

from controlplane.accounts import audit
from controlplane.deploys import usage
from controlplane.deploys.models import Project, Version
from controlplane.deploys.nodecalls import parallel, record, remove
from controlplane.deploys.services import DeployError, DeployOutcome, audit_outcome
from controlplane.nodes.models import Node


def delete_version(
    version: Version, actor: audit.Actor | None = None, *, retire_current: bool = False
) -> DeployOutcome:
    """Delete a version everywhere (see :func:`_delete_version`); audited.

    ``retire_current`` lets the current version go, as Scrapyd's ``delversion.json`` does: the
    newest remaining version becomes current (none if it was the last), as Scrapyd's default
    version would be. Other faces refuse, so that an operator rolls back on purpose.
    """
    project = version.project
    if retire_current and project.current_version_id == version.pk:
        successor = (
            project.versions.filter(deleted_at__isnull=True)
            .exclude(pk=version.pk)
            .order_by("-number")
            .first()
        )
        if usage.deletion_blockers(version):
            raise DeployError(
                "; ".join(usage.deletion_blockers(version)), code="conflict", status=409
            )
        Project.objects.filter(pk=project.pk).update(current_version=successor)
        project.current_version = successor
    outcome = _delete_version(version)
    audit_outcome(actor, "version.delete", outcome)
    return outcome


def _delete_version(version: Version) -> DeployOutcome:
    """Delete a version from every node (delversion.json), then its row.

    Refused (409) while it is the current version, pinned by a task, or used by active jobs.
    If jobs in history refer to it, or a node could not be reached, the row is kept as a
    tombstone without the egg: history stays intact and ``sync_node`` removes the egg from the
    unreachable node when it returns.
    """
    project = version.project
    if project.current_version_id == version.pk:
        raise DeployError(
            f"{version} is the current version of {project.name}; roll back to another first",
            code="conflict",
            status=409,
        )
    blockers = usage.deletion_blockers(version)
    if blockers:
        raise DeployError("; ".join(blockers), code="conflict", status=409)

    nodes = list(Node.objects.all())
    results = parallel(nodes, lambda n: remove(n, project.name, version.version))
    record(version, results)
    failed = [r for r in results if not r.ok]
    if failed or usage.kept_in_history(version):
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


def delete_project(project: Project, actor: audit.Actor | None = None) -> list[DeployOutcome]:
    """Every version of ``project`` off every node, as Scrapyd's ``delproject.json``.

    Refused while tasks run the project or its jobs are active. The project row stays while job
    history refers to it; a project without versions is not listed (as in Scrapyd, where a
    project is its eggs), and an upload under its name brings it back.
    """
    blockers = usage.project_deletion_blockers(project)
    if blockers:
        raise DeployError("; ".join(blockers), code="conflict", status=409)
    Project.objects.filter(pk=project.pk).update(current_version=None)
    project.current_version = None
    outcomes = [
        _delete_version(version)
        for version in project.versions.filter(deleted_at__isnull=True).order_by("number")
    ]
    audit.record(actor, "project.delete", project.name, versions=[str(o.version) for o in outcomes])
    if not project.versions.exists():  # tombstones stay while jobs remember them
        project.delete()
    return outcomes
