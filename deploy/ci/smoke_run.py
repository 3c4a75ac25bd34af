#!/usr/bin/env python3
"""Smoke run after a deploy: start a task through the REST API and wait until its run succeeds.

Standard library only, so it runs on any CI agent with Python 3. Exit status: 0 the run
succeeded (and scraped at least ``--min-items`` items), 1 it failed, was skipped or timed out,
2 usage or API error. Configured by options or the environment: ``CRAWLFLEET_URL``,
``CRAWLFLEET_TOKEN`` (an operator token; the environment keeps it out of process listings),
``CRAWLFLEET_SMOKE_TASK``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

ACTIVE = {"queued", "dispatching", "pending", "running"}


class ApiFailure(Exception):
    """The control plane answered with an error or not at all."""


class Api:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, query: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(
            url,
            method=method,
            data=b"" if method == "POST" else None,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ApiFailure(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiFailure(f"{method} {path}: {exc}") from None
        return json.loads(body) if body else None


def find_task(api: Api, name: str) -> dict[str, Any]:
    for task in api.call("GET", "/tasks"):
        if task["name"] == name:
            return task
    raise ApiFailure(f"no task named {name!r}")


def latest_attempts(jobs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The newest attempt of each shard: retries of a failed job count, the failure does not."""
    latest: dict[int, dict[str, Any]] = {}
    for job in jobs:
        shard = job.get("shard", 0)
        if shard not in latest or job["attempt"] > latest[shard]["attempt"]:
            latest[shard] = job
    return latest


def describe(job: dict[str, Any]) -> str:
    return (
        f"job {job['id']} attempt {job['attempt']} on {job.get('node') or '-'}: {job['state']}"
        f" items={job.get('items', 0)} pages={job.get('pages', 0)} errors={job.get('errors', 0)}"
        + (f" reason={job['reason']!r}" if job.get("reason") else "")
        + (f" log={job['log_url']}" if job.get("log_url") else "")
    )


def smoke(api: Api, task_name: str, timeout: float, min_items: int, interval: float) -> int:
    task = find_task(api, task_name)
    run = api.call("POST", f"/tasks/{task['id']}/run")
    print(f"started run {run['id']} of task {task_name} ({task['spider']}): {run['state']}")
    if run["state"] != "active":
        print(f"FAILED: the run was not started: {run['state']} {run.get('reason', '')}")
        return 1
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        jobs = api.call("GET", "/jobs", {"run": run["id"], "limit": 500})["items"]
        latest = latest_attempts(jobs)
        status = "; ".join(describe(j) for j in latest.values())
        if status != last:
            print(status, flush=True)
            last = status
        if latest and not any(j["state"] in ACTIVE for j in jobs):
            items = sum(j.get("items", 0) for j in latest.values())
            if all(j["state"] == "succeeded" for j in latest.values()) and items >= min_items:
                print(f"OK: run {run['id']} succeeded with {items} items")
                return 0
            print(f"FAILED: run {run['id']} ended: {status}")
            return 1
        time.sleep(interval)
    print(f"FAILED: run {run['id']} did not finish in {timeout:.0f}s: {last}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("CRAWLFLEET_URL", ""))
    parser.add_argument("--token", default=os.environ.get("CRAWLFLEET_TOKEN", ""))
    parser.add_argument(
        "--task", default=os.environ.get("CRAWLFLEET_SMOKE_TASK", "books-demo"), help="task name"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--min-items", type=int, default=1, help="fewer items fail the run")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    args = parser.parse_args(argv)
    if not args.url or not args.token:
        parser.error("--url and --token (or CRAWLFLEET_URL and CRAWLFLEET_TOKEN) are required")
    try:
        return smoke(
            Api(args.url, args.token), args.task, args.timeout, args.min_items, args.interval
        )
    except ApiFailure as exc:
        print(f"smoke run: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
