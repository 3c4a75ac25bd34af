"""A job's items feed, when its node serves one, read for the faces like its log.

crawlfleet nodes run Scrapyd without an ``items_dir`` (items go through the project's pipelines:
CSV on the node, Kafka), so they serve no items file; a plain Scrapyd node with an ``items_dir``
serves ``items/<project>/<spider>/<job>.jl`` (its ``listjobs.json`` ``items_url``). The path is
always the job's own (``Job.items_path``), and the file is read in bounded ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from controlplane.jobs.logs import LOG_READ_TIMEOUT, has_plain_names
from controlplane.jobs.models import Job
from controlplane.lib.scrapyd import ScrapydError

logger = logging.getLogger(__name__)
ITEMS_CHUNK_BYTES = 1024 * 1024  # the most one read asks of a node


@dataclass
class ItemsFile:
    """``state``: ``served`` (``size`` bytes), ``absent``, ``unreachable`` or ``none`` (no node)."""

    state: str
    size: int | None = None
    message: str = ""


def items_file(job: Job) -> ItemsFile:
    """Whether the job's node serves an items feed for it, and how large it is."""
    node = job.node
    if node is None or not has_plain_names(job):
        return ItemsFile("none", message="The job never ran on a node.")
    try:
        size = node.client(timeout=LOG_READ_TIMEOUT).file_size(job.items_path)
    except ScrapydError as exc:
        state = "unreachable" if exc.unreachable else "absent"
        return ItemsFile(state, message=f"Node {node.name} did not answer: {exc}")
    if size is None:
        return ItemsFile(
            "absent",
            message=f"Node {node.name} serves no items file for this job (its Scrapyd has no "
            "items_dir: items go through the project's pipelines).",
        )
    return ItemsFile("served", size)


def stream_items(job: Job, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of the job's items feed, a bounded range at a time."""
    client = job.node.client()
    offset = 0
    while offset < size:
        try:
            got = client.read_range(job.items_path, offset, min(ITEMS_CHUNK_BYTES, size - offset))
        except ScrapydError as exc:  # the download ends short; the reader sees it did
            logger.warning("items of job %s cut at byte %s: %s", job.pk, offset, exc)
            return
        if got is None or not got.data:
            return
        yield got.data
        offset = got.end
