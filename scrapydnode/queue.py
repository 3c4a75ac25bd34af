"""The node's job queue: Scrapyd's SQLite queue in WAL mode, without a disk sync per job.

Stock Scrapyd syncs its queue file to disk on every ``schedule.json``, which was most of a node's
time per accepted job when the control plane dispatches a burst. WAL with ``synchronous=NORMAL``
still survives a crash of the Scrapyd process (pending jobs are kept, as the fleet relies on);
only an operating-system crash can lose the last few accepted jobs, and the control plane then
re-queues them, because it reconciles every dispatched job with the node's own lists.
"""

from __future__ import annotations

from typing import Any

from scrapyd.spiderqueue import SqliteSpiderQueue


class WalSpiderQueue(SqliteSpiderQueue):
    def __init__(self, config: Any, project: str, table: str = "spider_queue") -> None:
        super().__init__(config, project, table)
        self.q.conn.execute("PRAGMA journal_mode=WAL")
        self.q.conn.execute("PRAGMA synchronous=NORMAL")

    def add_many(self, messages: list[tuple[float, dict[str, Any]]]) -> None:
        """Queue (priority, message) pairs in one transaction: all of them, or none."""
        q = self.q
        rows = [(priority, q.encode(message)) for priority, message in messages]
        with q.conn:
            q.conn.executemany(f"INSERT INTO {q.table} (priority, message) VALUES (?, ?)", rows)
