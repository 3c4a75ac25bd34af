"""Versions that tasks pin, told to deploys (see :mod:`controlplane.deploys.usage`)."""

from __future__ import annotations

from controlplane.deploys.models import Project, Version
from controlplane.deploys.usage import VersionUser
from controlplane.scheduling.models import Task


def _needed() -> set[int]:
    """Every node must hold what an enabled task pins, or the task could run nowhere."""
    return set(
        Task.objects.filter(enabled=True, version__isnull=False).values_list("version", flat=True)
    )


def _blocks_deletion(version: Version) -> str:
    pinned = sorted(Task.objects.filter(version=version).values_list("name", flat=True))
    return f"{version} is pinned by task(s) {', '.join(pinned)}" if pinned else ""


def _blocks_project_deletion(project: Project) -> str:
    names = sorted(Task.objects.filter(project=project).values_list("name", flat=True))
    return f"task(s) {', '.join(names)} run {project.name}; delete them first" if names else ""


PINNED_BY_TASKS = VersionUser(
    "tasks",
    needed=_needed,
    blocks_deletion=_blocks_deletion,
    blocks_project_deletion=_blocks_project_deletion,
)
