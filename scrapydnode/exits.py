"""A small SQLite record of how each crawl process ended, kept in the node's dbs_dir.

Scrapyd marks every ended job "finished" and only logs ``Process died: exitstatus=...``. The
control plane needs the difference between exit 0, exit 1 (spider failed to start) and a signal
(killed, often by the OOM killer), so the launcher writes it here and ``jobexits.json`` serves it.
Rows from an earlier Scrapyd process that never got an end are the jobs that process lost.
"""

from __future__ import annotations

import datetime as dt
import os
import signal as signal_module
import sqlite3
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_exits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id TEXT NOT NULL,
    job TEXT NOT NULL,
    project TEXT NOT NULL,
    spider TEXT NOT NULL,
    version TEXT,
    pid INTEGER,
    start_time TEXT NOT NULL,
    end_time TEXT,
    exit_code INTEGER,
    signal INTEGER
);
CREATE INDEX IF NOT EXISTS job_exits_job ON job_exits (job);
"""
COLUMNS = "id, boot_id, job, project, spider, version, pid, start_time, end_time, exit_code, signal"


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def process_alive(pid: int | None, job: str) -> bool:
    """Whether ``pid`` is still the crawl of ``job`` (not a zombie, not a recycled pid)."""
    if not pid:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return f"_job={job}".encode() in cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExitStore:
    """Start and end of the last ``keep`` crawl processes of this node."""

    def __init__(self, path: str | Path, *, keep: int = 1000, boot_id: str | None = None) -> None:
        self.path = str(path)
        self.keep = max(1, keep)
        self.boot_id = boot_id or uuid.uuid4().hex
        # Used from the reactor thread only; autocommit so a SIGKILL loses nothing written.
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.executescript(SCHEMA)

    def started(
        self, *, job: str, project: str, spider: str, version: str | None, pid: int | None
    ) -> int:
        cursor = self.conn.execute(
            "INSERT INTO job_exits (boot_id, job, project, spider, version, pid, start_time)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.boot_id, job, project, spider, version, pid, utcnow()),
        )
        self._trim()
        return int(cursor.lastrowid or 0)

    def ended(
        self,
        row_id: int | None,
        *,
        exit_code: int | None,
        signal: int | None,
        job: str,
        project: str,
        spider: str,
        version: str | None,
        pid: int | None,
    ) -> None:
        if row_id is None:
            row_id = self.started(job=job, project=project, spider=spider, version=version, pid=pid)
        self.conn.execute(
            "UPDATE job_exits SET end_time = ?, exit_code = ?, signal = ? WHERE id = ?",
            (utcnow(), exit_code, signal, row_id),
        )

    def query(
        self, *, job: str | None = None, project: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Records, newest first, as JSON-ready dicts."""
        clauses, params = [], []
        if job is not None:
            clauses.append("job = ?")
            params.append(job)
        if project is not None:
            clauses.append("project = ?")
            params.append(project)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.conn.execute(
            f"SELECT {COLUMNS} FROM job_exits {where} ORDER BY id DESC LIMIT ?",
            (*params, max(1, limit)),
        ).fetchall()
        return [self._record(row) for row in rows]

    def _record(self, row: tuple[Any, ...]) -> dict[str, Any]:
        (_id, boot_id, job, project, spider, version, pid, start, end, exit_code, sig) = row
        if end is None:
            state = "running" if boot_id == self.boot_id else "lost"
            alive = process_alive(pid, job)
        else:
            state = "killed" if sig is not None else "exited"
            alive = False
        return {
            "job": job,
            "project": project,
            "spider": spider,
            "version": version,
            "pid": pid,
            "state": state,
            "exit_code": exit_code,
            "signal": sig,
            "signal_name": signal_name(sig),
            "start_time": start,
            "end_time": end,
            "pid_alive": alive,
            "boot_id": boot_id,
        }

    def _trim(self) -> None:
        self.conn.execute(
            "DELETE FROM job_exits WHERE id <= (SELECT MAX(id) FROM job_exits) - ?", (self.keep,)
        )

    def close(self) -> None:
        self.conn.close()
