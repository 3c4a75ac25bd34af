"""``schedulebatch.json``: many jobs queued in one request and one queue transaction.

A burst of fires sends hundreds of jobs to a node at once. One ``schedule.json`` each costs a
request, a parse and a queue commit per job; this endpoint takes them all in one JSON body::

    POST /schedulebatch.json   Content-Type: application/json
    {"jobs": [{"project", "spider", "jobid", "_version"?, "priority"?, "settings"?: {k: v},
               "args"?: {k: v}}, ...]}

and answers one line per job, in order::

    {"status": "ok", "node_name": ..., "jobs": [{"jobid", "status": "ok" | "error",
                                                 "message"?}, ...]}

Each job is checked as Scrapyd's own ``schedule.json`` checks it (project, version and spider
known here) and queued as the same message, so the launcher cannot tell the two apart. A body
that is not a batch at all (not JSON, no ``jobs`` list, too many jobs, an entry without a
``jobid``, a ``jobid`` twice) is refused whole, with nothing queued.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from scrapyd.exceptions import RunnerError
from scrapyd.webservice import WsResource, spider_list
from twisted.web import error, http

MAX_JOBS = 1000
MAX_BODY = 16 * 1024 * 1024
# Keys of a queued message that Scrapyd itself sets; an argument of that name would clobber one.
RESERVED_ARGS = frozenset({"name", "settings", "project", "spider", "jobid", "setting"})


class BatchError(Exception):
    """A body that is not a batch: the whole request is refused."""


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    """The batch's entries, each an object with a string ``jobid``; BatchError otherwise."""
    if len(body) > MAX_BODY:
        raise BatchError(f"the body is over {MAX_BODY} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BatchError(f"the body is not JSON: {exc}") from exc
    jobs = payload.get("jobs") if isinstance(payload, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise BatchError('the body must be {"jobs": [...]} with at least one job')
    if len(jobs) > MAX_JOBS:
        raise BatchError(f"{len(jobs)} jobs in one batch; at most {MAX_JOBS}")
    seen: set[str] = set()
    for index, entry in enumerate(jobs):
        jobid = entry.get("jobid") if isinstance(entry, dict) else None
        if not isinstance(jobid, str) or not jobid:
            raise BatchError(f"jobs[{index}] must be an object with a non-empty string 'jobid'")
        if jobid in seen:
            raise BatchError(f"jobid {jobid!r} is in the batch twice")
        seen.add(jobid)
    return jobs


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"'{what}' must be an object of string names to string values")
    return value


def queue_message(entry: dict[str, Any]) -> tuple[str, str, float, dict[str, Any]]:
    """(project, spider, priority, message) as Scrapyd's ``schedule.json`` would queue it;
    ValueError with the reason for an entry of the wrong shape."""
    project, spider, version = entry.get("project"), entry.get("spider"), entry.get("_version")
    if not isinstance(project, str) or not project:
        raise ValueError("'project' must be a non-empty string")
    if not isinstance(spider, str) or not spider:
        raise ValueError("'spider' must be a non-empty string")
    if version is not None and (not isinstance(version, str) or not version):
        raise ValueError("'_version' must be a non-empty string")
    priority = entry.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise ValueError("'priority' must be a number")
    settings = _string_map(entry.get("settings"), "settings")
    args = _string_map(entry.get("args"), "args")
    reserved = sorted(k for k in args if k.startswith("_") or k in RESERVED_ARGS)
    if reserved:
        raise ValueError(f"reserved by Scrapyd, not spider arguments: {', '.join(reserved)}")
    message: dict[str, Any] = dict(args)
    if version is not None:
        message["_version"] = version
    message.update(settings=dict(settings), _job=entry["jobid"], name=spider)
    return project, spider, float(priority), message


class ScheduleBatch(WsResource):
    def render_POST(self, txrequest: Any) -> dict[str, Any]:
        try:
            entries = parse_batch(txrequest.content.read(MAX_BODY + 1))
        except BatchError as exc:
            raise error.Error(code=http.OK, message=str(exc).encode()) from exc
        answers: list[dict[str, Any]] = []
        queued: dict[str, list[tuple[dict[str, Any], float, dict[str, Any]]]] = {}
        spiders = _SpiderCache(self.root)
        for entry in entries:
            answer: dict[str, Any] = {"jobid": entry["jobid"], "status": "ok"}
            try:
                project, spider, priority, message = queue_message(entry)
                spiders.check(project, message.get("_version"), spider)
            except ValueError as exc:
                answer.update(status="error", message=str(exc))
            else:
                queued.setdefault(project, []).append((answer, priority, message))
            answers.append(answer)
        for project, jobs in queued.items():
            self._queue(project, jobs)
        return {"jobs": answers}

    def _queue(
        self, project: str, jobs: list[tuple[dict[str, Any], float, dict[str, Any]]]
    ) -> None:
        """Queue one project's jobs; any job that could not be queued is answered ``error``.

        Each project has its own queue database, so a failure in one leaves the others queued:
        the answer says exactly which jobs are here, never more."""
        scheduler = self.root.scheduler
        add_many: Callable[..., None] | None = getattr(
            getattr(scheduler, "queues", {}).get(project), "add_many", None
        )
        done = 0
        try:
            if add_many is not None:
                add_many([(priority, message) for _, priority, message in jobs])
                done = len(jobs)
            for _, priority, message in jobs[done:]:  # a queue without batches: one insert each
                message = dict(message)
                name = message.pop("name")
                scheduler.schedule(project, name, priority=priority, **message)
                done += 1
        except Exception as exc:  # reported per job, never as queued
            for answer, _, _ in jobs[done:]:
                answer.update(status="error", message=f"could not queue: {exc}")


class _SpiderCache:
    """Project, version and spider checks, each (project, version) asked of Scrapyd once."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.known: dict[tuple[str, str | None], set[str] | str] = {}

    def check(self, project: str, version: str | None, spider: str) -> None:
        key = (project, version)
        if key not in self.known:
            self.known[key] = self._spiders(project, version)
        spiders = self.known[key]
        if isinstance(spiders, str):
            raise ValueError(spiders)
        if spider not in spiders:
            raise ValueError(f"spider '{spider}' not found")

    def _spiders(self, project: str, version: str | None) -> set[str] | str:
        """The spiders of that egg, or why there are none."""
        if project not in self.root.poller.queues:
            return f"project '{project}' not found"
        if version and self.root.eggstorage.get(project, version) == (None, None):
            return f"version '{version}' not found"
        try:
            return set(spider_list.get(project, version, runner=self.root.runner))
        except RunnerError as exc:
            return f"could not list the spiders of {project} {version or ''}: {exc}".strip()
