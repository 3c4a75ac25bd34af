"""Poller replicas split the fleet: each polls the nodes it owns among the live replicas.

Each cycle a replica renews its :class:`PollerReplica` row (good for ``timeout`` seconds) and
reads the live rows. Ownership of a node is :func:`controlplane.lib.rendezvous.owner` of its id
over those names, so every replica reaches the same split from the same rows, and a replica
joining or leaving moves only its own share.

Nothing here has to be exact. While replicas see different member lists (one just joined, or
one died and its row has not expired yet) a node may be polled by two replicas or by none for a
cycle or two. Both are safe: every change a poll makes is a conditional update (see
:mod:`controlplane.jobs.tracking`), and a node's jobs wait for its next poll. A replica that
stops deletes its row so the others take its nodes at their next cycle; one that is killed
stops counting when its row expires.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from controlplane.lib import rendezvous
from controlplane.loops.models import PollerReplica

NodeLike = TypeVar("NodeLike", bound=Model)
logger = logging.getLogger(__name__)


def replica_name() -> str:
    """Unique among replicas on every host, and readable in logs: host, pid and a nonce (a pid
    is reused after a restart, and the dead replica's row may still be there)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Membership:
    """This replica's row among the live poller replicas."""

    def __init__(self, timeout: float, name: str | None = None) -> None:
        if timeout <= 0:
            raise ValueError("a replica's timeout must be positive")
        self.timeout = timeout
        self.name = name or replica_name()
        self.started_at = timezone.now()

    def beat(self) -> list[str]:
        """Renew this replica's row; the names of every live replica, this one included."""
        now = timezone.now()
        expires = now + timedelta(seconds=self.timeout)
        renewed = PollerReplica.objects.filter(name=self.name).update(
            seen_at=now, expires_at=expires
        )
        if not renewed:
            # First cycle, or another replica pruned the row while this one was stalled.
            try:
                with transaction.atomic():
                    PollerReplica.objects.create(
                        name=self.name, started_at=self.started_at, seen_at=now, expires_at=expires
                    )
            except IntegrityError:
                # Created between the update and the insert: another poller has this name. Both
                # poll the same share, which is safe; the name should be made unique.
                logger.warning("another poller replica is named %s; give each a name", self.name)
        PollerReplica.objects.filter(expires_at__lt=now).delete()
        live = PollerReplica.objects.filter(expires_at__gte=now).values_list("name", flat=True)
        return sorted(set(live) | {self.name})

    def mine(self, nodes: Sequence[NodeLike], members: Sequence[str]) -> list[NodeLike]:
        """The nodes this replica owns among ``members``, and records them on its row."""
        owned = [node for node in nodes if rendezvous.owner(str(node.pk), members) == self.name]
        PollerReplica.objects.filter(name=self.name).update(node_ids=[node.pk for node in owned])
        return owned

    def leave(self) -> None:
        """Stop counting now, so the other replicas take this one's nodes at their next cycle."""
        PollerReplica.objects.filter(name=self.name).delete()


def live_replicas() -> list[PollerReplica]:
    """The live replicas and their shares, for pages and metrics."""
    return list(PollerReplica.objects.filter(expires_at__gte=timezone.now()))
