"""Kept-alive connections that queue jobs on one node: ``schedule.json`` and its batch form.

The hot path of a dispatch burst. Plain ``http.client`` costs about a third of the CPU per call
of a ``requests`` session, and a crawlfleet node's ``schedulebatch.json`` takes all of a burst's
jobs for that node in one request and one queue commit. Answers are read by
:func:`~controlplane.lib.scrapyd.read_answer`, exactly as :class:`ScrapydClient` reads them.
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from controlplane.lib.scrapyd import ScrapydError, read_answer

BATCH_ENDPOINT = "schedulebatch.json"
#: The most jobs a crawlfleet node takes in one batch (``scrapydnode.batch.MAX_JOBS``).
MAX_BATCH = 1000


class BatchUnsupported(ScrapydError):
    """The node has no ``schedulebatch.json`` (stock Scrapyd): send its jobs one by one."""


class BatchSupport:
    """Which nodes were found without ``schedulebatch.json``, so a burst sends their jobs one
    by one at once; each is asked again after ``recheck_after`` seconds, as it may have been
    upgraded meanwhile (asking costs one 404 and queues nothing). Shared by sender threads."""

    def __init__(
        self, recheck_after: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.recheck_after = recheck_after
        self.clock = clock
        self._lock = threading.Lock()
        self._unsupported_since: dict[str, float] = {}

    def worth_trying(self, url: str) -> bool:
        with self._lock:
            since = self._unsupported_since.get(url)
            if since is None:
                return True
            if self.clock() - since < self.recheck_after:
                return False
            del self._unsupported_since[url]
            return True

    def mark_unsupported(self, url: str) -> None:
        with self._lock:
            self._unsupported_since[url] = self.clock()


@dataclass(frozen=True)
class BatchAnswer:
    """What the node said of one job of a batch: queued (``error`` empty) or why not."""

    jobid: str
    error: str = ""


def batch_entry(
    project: str,
    spider: str,
    version: str,
    jobid: str,
    settings: dict[str, str] | None = None,
    args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One job of a ``schedulebatch.json`` body: what :func:`schedule_form` says, as JSON."""
    return {
        "project": project,
        "spider": spider,
        "_version": version,
        "jobid": jobid,
        "settings": {key: str(value) for key, value in (settings or {}).items()},
        "args": {key: str(value) for key, value in (args or {}).items()},
    }


class ScheduleConnection:
    """A keep-alive HTTP connection to one node, for queueing jobs only. One per thread."""

    def __init__(self, url: str, username: str, password: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base = parts.path.rstrip("/") + "/"
        self.timeout = timeout
        self.auth: dict[str, str] = {}
        if username:
            credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.auth["Authorization"] = f"Basic {credentials}"
        self._connection: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        connection = self._connection
        if connection is not None and connection.sock is not None:
            # The node closed an idle connection: reconnect before sending, never after.
            readable, _, _ = select.select([connection.sock], [], [], 0)
            if readable:
                connection.close()
                connection = None
        if connection is None:
            factory = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            connection = factory(self.host, self.port, timeout=self.timeout)
            self._connection = connection
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _post(self, endpoint: str, body: bytes | str, content_type: str) -> tuple[int, bytes]:
        """(status, body) of one POST; ScrapydError(``unreachable``) if no answer came."""
        headers = {"Content-Type": content_type, **self.auth}
        try:
            connection = self._open()
            connection.request("POST", self.base + endpoint, body, headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ScrapydError(f"{self.url} unreachable: {exc}", unreachable=True) from exc

    def schedule(self, form: list[tuple[str, str]]) -> str:
        """POST schedule.json; the job id, or ScrapydError (``unreachable`` if no answer)."""
        status, body = self._post(
            "schedule.json", urlencode(form), "application/x-www-form-urlencoded"
        )
        return str(read_answer(self.url, "schedule.json", status, body).get("jobid", ""))

    def schedule_batch(self, jobs: list[dict[str, Any]]) -> list[BatchAnswer]:
        """POST schedulebatch.json; one answer per job, in order.

        BatchUnsupported if the node has no such endpoint (nothing was queued); ScrapydError
        if it refused the whole batch, or (``unreachable``) if no answer came, when any of the
        jobs may or may not be queued."""
        status, body = self._post(
            BATCH_ENDPOINT, json.dumps({"jobs": jobs}).encode(), "application/json"
        )
        if status in (404, 405):
            raise BatchUnsupported(f"{self.url} has no {BATCH_ENDPOINT} (HTTP {status})")
        answers = read_answer(self.url, BATCH_ENDPOINT, status, body).get("jobs")
        if not isinstance(answers, list) or len(answers) != len(jobs):
            # Which of them are queued cannot be told: the poller reconciles each by job id.
            count = len(answers) if isinstance(answers, list) else 0
            raise ScrapydError(
                f"{self.url}{BATCH_ENDPOINT} answered for {count} of {len(jobs)} jobs",
                unreachable=True,
            )
        return [_answer(job["jobid"], answer) for job, answer in zip(jobs, answers, strict=True)]


def _answer(jobid: str, answer: Any) -> BatchAnswer:
    if isinstance(answer, dict) and answer.get("jobid") == jobid and answer.get("status") == "ok":
        return BatchAnswer(jobid)
    message = answer.get("message") if isinstance(answer, dict) else None
    return BatchAnswer(jobid, str(message or f"not queued: {answer!r}")[:500])
