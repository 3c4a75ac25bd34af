"""The jobs the database places on nodes, read once for a whole poll round.

A poll of a node reads the jobs we believe are on it, then ``listjobs.json`` (docs/FAILURES.md).
One query per node costs the round most of its database time (compiling the same query a hundred
times), so the poller reads every on-node job in one query before it starts polling, and each
node's poll takes its share. The order per node is unchanged: the read happens before that
node's ``listjobs.json``, so a job dispatched in between is never mistaken for one the node
forgot; it is listed by the node but not in the snapshot, and the stray check reads it again
from the database (:meth:`controlplane.jobs.tracking.Tracker.stop_strays`).

A snapshot older than ``max_age`` (a node that waited long for a poll thread) is not used: that
node reads its own jobs, as a poll without a snapshot does.
"""

from __future__ import annotations

import time

from controlplane.jobs.models import Job


def on_node_jobs(node_ids: list[int] | None = None) -> list[Job]:
    """Jobs on a node (of ``node_ids``, or any), with what reconciling them reads."""
    jobs = Job.objects.filter(state__in=Job.ON_NODE)
    jobs = (
        jobs.filter(node_id__in=node_ids)
        if node_ids is not None
        else jobs.filter(node__isnull=False)
    )
    return list(jobs.select_related("run__task", "project").order_by("node_id", "pk"))


class RoundJobs:
    """The on-node jobs of the round's nodes, grouped by node, read at one instant."""

    def __init__(self, jobs: list[Job], read_at: float) -> None:
        self.read_at = read_at
        self._by_node: dict[int, list[Job]] = {}
        for job in jobs:
            self._by_node.setdefault(job.node_id, []).append(job)

    @classmethod
    def read(cls, node_ids: list[int] | None = None) -> RoundJobs:
        """The jobs on ``node_ids`` (a poller replica's share), or on any node."""
        read_at = time.monotonic()
        return cls(on_node_jobs(node_ids), read_at)

    def for_node(self, node_id: int, max_age: float) -> list[Job] | None:
        """The node's jobs, or None when the snapshot is too old to use (read them again)."""
        if time.monotonic() - self.read_at > max_age:
            return None
        return self._by_node.get(node_id, [])
