"""What the apps above nodes have to say about a node, told through a registry.

Nodes sits below deploys and jobs and never imports them. Yet a node must not be deleted while
jobs are on it, and a node that is added or taken back into service should receive the versions
it lacks at once. The apps that know register a :class:`NodeUser` from their
``AppConfig.ready()`` (as :mod:`controlplane.deploys.usage` does for versions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.nodes.models import Node

logger = logging.getLogger(__name__)


def _nothing(node: Node) -> str:
    return ""


@dataclass(frozen=True)
class NodeUser:
    """One kind of interest in nodes.

    - ``blocks_deletion``: why ``node`` cannot be deleted now (work still on it), or "".
    - ``catch_up``: bring a node that joined or returned to service up to date; returns a one-line
      summary of what it did, or "". Called only for a node that answers.
    """

    name: str
    blocks_deletion: Callable[[Node], str] = _nothing
    catch_up: Callable[[Node], str] = _nothing


_users: dict[str, NodeUser] = {}


def register(user: NodeUser) -> None:
    """Register (or replace, by name) a kind of interest; called from ``AppConfig.ready()``."""
    _users[user.name] = user


def deletion_blockers(node: Node) -> list[str]:
    return [reason for user in _users.values() if (reason := user.blocks_deletion(node))]


def catch_up(node: Node) -> list[str]:
    """Every registered catch-up, each on its own: a node problem never fails the caller."""
    notes = []
    for user in _users.values():
        try:
            note = user.catch_up(node)
        except Exception:
            logger.exception("%s: catching node %s up failed", user.name, node.name)
            note = f"{user.name}: catching up failed; the poller tries again when it sees the node"
        if note:
            notes.append(note)
    return notes
