"""Versions that jobs wait for, run or remember, told to deploys (:mod:`controlplane.deploys.usage`)."""

from __future__ import annotations

from controlplane.deploys.models import Project, Version
from controlplane.deploys.usage import VersionUser
from controlplane.jobs.models import Job


def _needed() -> set[int]:
    """A queued job (a retry on an older version, say) needs its version on some node."""
    return set(Job.objects.filter(state=Job.State.QUEUED).values_list("version", flat=True))


def _blocks_deletion(version: Version) -> str:
    active = Job.objects.filter(version=version, state__in=Job.ACTIVE).count()
    return f"{active} active job(s) use {version}; cancel them or wait" if active else ""


def _keeps_history(version: Version) -> bool:
    return Job.objects.filter(version=version).exists()


def _blocks_project_deletion(project: Project) -> str:
    active = Job.objects.filter(project=project, state__in=Job.ACTIVE).count()
    return f"{active} active job(s) of {project.name}; cancel them or wait" if active else ""


USED_BY_JOBS = VersionUser(
    "jobs",
    needed=_needed,
    blocks_deletion=_blocks_deletion,
    keeps_history=_keeps_history,
    blocks_project_deletion=_blocks_project_deletion,
)
