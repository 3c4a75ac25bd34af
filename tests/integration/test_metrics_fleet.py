"""/metrics of a real ``crawlfleet web`` (three gunicorn workers) while real jobs run on real
Scrapyd nodes, dispatched by a real scheduler and followed by two real poller replicas, which
share the nodes between them.

Every answer is read with prometheus_client's own parser. While the work runs, the poll-cycle
histogram grows. Once the jobs have ended (one is left running, two are left queued) the
scheduler and the pollers are stopped, so the database holds still, and then every scrape,
whichever worker answers it, says the same thing and matches the database.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.runs import create_run
from controlplane.lib.procutil import free_port
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.common import wait_until
from tests.fixtures.fleet import job_state, make_task, run_closed, start_run
from tests.fixtures.jobs import create_adhoc_run
from tests.fixtures.metrics import by_label, histogram_series, jobs_by_state, parse

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]

TOKEN = "fleet-metrics-token"
WORKERS = 3


def scrape(url: str, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # A new connection each time, so the scrapes spread over the workers.
    return requests.get(f"{url}/metrics", headers={**headers, "Connection": "close"}, timeout=10)


def scrape_text(url: str) -> str:
    response = scrape(url)
    assert response.status_code == 200, response.text
    return response.text


def workers_with_the_database_open(arbiter_pid: int) -> set[int]:
    """Gunicorn workers of ``arbiter_pid`` holding the test database open: the ones that have
    answered a scrape (the arbiter closes its connections before it forks them)."""
    database = os.path.realpath(connection.settings_dict["NAME"])
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent != arbiter_pid:
                continue
            if any(os.path.realpath(fd) == database for fd in (entry / "fd").iterdir()):
                found.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def cycles_logged(pollers) -> int:
    total = 0
    for poller in pollers:
        found = re.findall(r"poller stopping after (\d+) cycle", poller.log_tail(10**7))
        assert len(found) == 1, poller.log_tail()
        total += int(found[0])
    return total


def test_scrapes_of_any_worker_match_the_database_while_replicas_work(fleet, cp_env, cp_process):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cp_env["CRAWLFLEET_PUBLIC_URL"] = url
    web = cp_process(
        "web", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
        env={"CRAWLFLEET_METRICS_TOKEN": TOKEN},
    )  # fmt: skip
    web.wait_for_port(port, timeout=30)
    assert workers_with_the_database_open(web.pid) == set()

    # The work: manual, API and cron-fired runs; a failure retried once (attempt 2 is no
    # first attempt); a crawl that keeps running; a job no node may take and one in backoff.
    ok = make_task(fleet, "ok", max_attempts=1)
    finishing = [start_run(ok) for _ in range(3)]
    fired = create_run(ok, timezone.now() - timedelta(seconds=20), TaskRun.Trigger.CRON)
    finishing += [fired, create_adhoc_run(fleet.project, "ok").run]
    finishing.append(start_run(make_task(fleet, "callback_error", max_attempts=2)))
    hang = start_run(make_task(fleet, "hang", max_attempts=1)).jobs.get()
    nowhere = make_task(fleet, "ok", selector=Task.Selector.TAGS, selector_tags=["nowhere"])
    start_run(nowhere)
    held = start_run(ok).jobs.get()
    Job.objects.filter(pk=held.pk).update(not_before=timezone.now() + timedelta(hours=1))

    processes = [
        cp_process("scheduler", name="scheduler"),
        cp_process("poller", name="poller-a"),
        cp_process("poller", name="poller-b"),
    ]
    pollers = processes[1:]

    def alive() -> None:
        for proc in [web, *processes]:
            assert proc.alive(), f"{proc.name} died:\n{proc.log_tail()}"

    # While the replicas work: every answer parses, and the poll-cycle count only grows.
    seen: list[float] = []

    def cycles_grew() -> bool:
        alive()
        seen.append(
            histogram_series(parse(scrape_text(url)), "crawlfleet_poll_cycle_seconds")["count"]
        )
        assert seen == sorted(seen), seen
        return len(seen) >= 2 and seen[-1] > seen[0]

    wait_until(cycles_grew, 60, "poll cycles counted")

    # The two pollers share the nodes: both live, each polling its own part of the fleet.
    every = {row.name for row in fleet.rows}

    def shared() -> bool:
        alive()
        families = parse(scrape_text(url))
        shares = by_label(families, "crawlfleet_poller_replica_nodes", "replica")
        return (
            families["crawlfleet_poller_replicas"][("crawlfleet_poller_replicas", ())] == 2
            and len(shares) == 2
            and sum(shares.values()) == len(every)
        )

    wait_until(shared, 30, "the nodes shared by two poller replicas")

    def settled() -> bool:
        alive()
        return all(run_closed(run)() for run in finishing) and job_state(hang, Job.State.RUNNING)()

    wait_until(settled, 120, "runs ended and the hanging crawl running", interval=0.5)
    for proc in processes:  # SIGTERM: each ends its cycle or dispatch, then exits
        proc.stop()
    for proc in pollers:
        assert proc.proc.returncode == 0, proc.log_tail()

    # The database holds still now; scrapes from many connections, in parallel.
    with ThreadPoolExecutor(8) as pool:

        def spread() -> set[int]:
            bodies.update(pool.map(lambda _: scrape_text(url), range(16)))
            return len(workers_with_the_database_open(web.pid)) >= 2 and bodies

        bodies: set[str] = set()
        wait_until(spread, 30, "scrapes answered by two workers or more")
    assert len(bodies) == 1, "workers disagree"
    families = parse(bodies.pop())

    assert by_label(families, "crawlfleet_jobs", "state") == jobs_by_state()
    # Stopped pollers left: none is counted, and no share is left behind.
    assert families["crawlfleet_poller_replicas"][("crawlfleet_poller_replicas", ())] == 0
    assert by_label(families, "crawlfleet_poller_replica_nodes", "replica") == {}
    assert by_label(families, "crawlfleet_queue_depth", "project") == {fleet.project.name: 2}
    assert by_label(families, "crawlfleet_queue_backoff", "project") == {fleet.project.name: 1}
    on_nodes = Counter(
        Job.objects.filter(state__in=Job.ON_NODE).values_list("node__name", flat=True)
    )
    assert on_nodes == {hang.node.name: 1}
    names = [row.name for row in fleet.rows]
    assert by_label(families, "crawlfleet_node_jobs", "node") == {n: on_nodes[n] for n in names}
    assert by_label(families, "crawlfleet_node_up", "node") == dict.fromkeys(names, 1)
    assert by_label(families, "crawlfleet_node_capacity", "node") == dict.fromkeys(names, 2)
    for name in names:
        up = ("crawlfleet_node_state", (("node", name), ("state", "up")))
        assert families["crawlfleet_node_state"][up] == 1

    # Both pollers' cycles, each counted once.
    polls = histogram_series(families, "crawlfleet_poll_cycle_seconds")
    assert polls["count"] == cycles_logged(pollers) > 0
    assert polls["count"] >= seen[-1]

    # One observation per dispatched first attempt, by trigger; retries are not counted.
    dispatched = Job.objects.filter(dispatched_at__isnull=False)
    assert dispatched.filter(attempt__gt=1).exists()
    expected = dict(
        dispatched.filter(attempt=1).values_list("run__trigger").annotate(n=Count("pk"))
    )
    assert expected == {"manual": 5, "api": 1, "cron": 1}
    for trigger in TaskRun.Trigger.values:
        latency = histogram_series(families, "crawlfleet_fire_to_dispatch_seconds", trigger=trigger)
        assert latency["count"] == latency["+Inf"] == expected.get(trigger, 0), trigger
        waited = sum(
            (job.dispatched_at - job.run.scheduled_for).total_seconds()
            for job in dispatched.filter(attempt=1, run__trigger=trigger).select_related("run")
        )
        assert latency["sum"] == pytest.approx(waited, abs=2.0), trigger
    # The cron fire was 20 s old when it was recorded: never in a bucket below that.
    cron = histogram_series(families, "crawlfleet_fire_to_dispatch_seconds", trigger="cron")
    assert cron["10.0"] == 0

    # The real server keeps its token: no token, no metrics.
    refused = scrape(url, token=None)
    assert refused.status_code == 401
    assert "crawlfleet_" not in refused.text
