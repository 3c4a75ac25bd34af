"""Who still uses a version, as told by the apps above deploys.

Deploys sits below scheduling and jobs and never imports them. Yet before a version is deleted it
must know whether a task pins it or a job runs it, and a returning node must receive the versions
that tasks pin and queued jobs wait for. The apps that hold such references register a
:class:`VersionUser` from their ``AppConfig.ready()``, the way Django's admin lets apps register
their models: the dependency points up only at run time, through an explicit registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controlplane.deploys.models import Project, Version


def _nothing(version: Version) -> str:
    return ""


def _no_history(version: Version) -> bool:
    return False


def _no_project_use(project: Project) -> str:
    return ""


@dataclass(frozen=True)
class VersionUser:
    """One kind of reference to versions.

    - ``needed``: ids of versions every node must hold for these references.
    - ``blocks_deletion``: why ``version`` cannot be deleted now, or "".
    - ``keeps_history``: rows still refer to ``version``, so its row stays as a tombstone.
    - ``blocks_project_deletion``: why every version of ``project`` cannot go now, or "".
    """

    name: str
    needed: Callable[[], set[int]]
    blocks_deletion: Callable[[Version], str] = _nothing
    keeps_history: Callable[[Version], bool] = _no_history
    blocks_project_deletion: Callable[[Project], str] = _no_project_use


_users: dict[str, VersionUser] = {}


def register(user: VersionUser) -> None:
    """Register (or replace, by name) a kind of reference; called from ``AppConfig.ready()``."""
    _users[user.name] = user


def needed_version_ids() -> set[int]:
    ids: set[int] = set()
    for user in _users.values():
        ids |= user.needed()
    return ids


def deletion_blockers(version: Version) -> list[str]:
    """Every reason ``version`` cannot be deleted yet, in registration order."""
    return [reason for user in _users.values() if (reason := user.blocks_deletion(version))]


def project_deletion_blockers(project: Project) -> list[str]:
    return [r for user in _users.values() if (r := user.blocks_project_deletion(project))]


def kept_in_history(version: Version) -> bool:
    return any(user.keeps_history(version) for user in _users.values())
