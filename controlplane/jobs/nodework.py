"""Jobs still on a node, told to nodes (:mod:`controlplane.nodes.usage`): a node with work on it
is not deleted from under its jobs."""

from __future__ import annotations

from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.nodes.usage import NodeUser


def _blocks_deletion(node: Node) -> str:
    busy = Job.objects.filter(node=node, state__in=Job.ON_NODE).count()
    return f"{busy} job(s) are on node {node.name}" if busy else ""


JOBS_ON_NODE = NodeUser("jobs", blocks_deletion=_blocks_deletion)
