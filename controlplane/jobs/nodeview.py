"""What one node says about its jobs: its job listing, exit records and logs, read once a poll.

A :class:`NodeSession` caches what it fetched for the length of one poll of one node, so a node
with many ended jobs is asked for its exit records once, not once per job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.jobs import outcome
from controlplane.jobs.models import Job
from controlplane.lib.scrapyd import ScrapydClient, ScrapydError
from controlplane.nodes.models import Node

logger = logging.getLogger(__name__)

LOG_TAIL_BYTES = 64 * 1024
LOG_TAIL_MAX_BYTES = 1024 * 1024


def parse_node_time(value: str | None) -> datetime | None:
    """A time from a node: Scrapyd's naive local strings (read as this host's local time, the
    usual setup where nodes and control plane share a timezone) or ISO times with an offset."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.astimezone(UTC)


@dataclass
class Listing:
    """One ``listjobs.json`` answer, indexed by job id."""

    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_api(cls, payload: dict[str, list[dict[str, Any]]]) -> Listing:
        return cls(
            **{
                key: {str(entry["id"]): entry for entry in payload.get(key, []) if "id" in entry}
                for key in ("pending", "running", "finished")
            }
        )

    def where(self, job_id: str) -> tuple[str | None, dict[str, Any]]:
        # Finished first: an id is in one list only, but a stale cache must not revive a job.
        for name in ("finished", "running", "pending"):
            entry = getattr(self, name).get(job_id)
            if entry is not None:
                return name, entry
        return None, {}


class NodeSession:
    """One poll of one node: its client, and its exit records fetched only when needed."""

    def __init__(self, node: Node, client: ScrapydClient | None = None) -> None:
        self.node = node
        self.client = client or node.client()
        self._exits: dict[str, dict[str, Any] | None] = {}
        self.has_exits = True

    def exit_record(self, job_id: str) -> dict[str, Any] | None:
        """The node's record of how the job's process ended (or that it is still running)."""
        if not self.has_exits:
            return None
        if job_id not in self._exits:
            try:
                payload = self.client.get("jobexits.json", job=job_id, limit=1)
            except ScrapydError as exc:
                if not exc.unreachable:
                    self.has_exits = False  # a plain Scrapyd without the service
                return None
            records = payload.get("exits") or []
            self._exits[job_id] = records[0] if records else None
        return self._exits[job_id]

    def log_tail(self, job: Job) -> str:
        """The end of the job's log; a larger window if the stats dump started before it."""
        path = job.log_path
        try:
            text = self.client.tail(path, LOG_TAIL_BYTES)
            if outcome.STATS_MARKER not in text and len(text.encode()) >= LOG_TAIL_BYTES:
                text = self.client.tail(path, LOG_TAIL_MAX_BYTES)
        except ScrapydError as exc:
            logger.info("no log for job %s on %s: %s", job.pk, self.node.name, exc)
            return ""
        return text
