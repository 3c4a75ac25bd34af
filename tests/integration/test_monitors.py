"""Monitors end to end: real crawls on real Scrapyd nodes against the demo bookshop, each made
to break one rule, must end in the state the rule names with a sentence that gives the figures.

The crawler egg reports its stats (and field counts) to a real ``crawlfleet web``; the poller
runs in-process. The failproject egg has no report extension: it is judged from its log alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from controlplane import events
from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.loops.poller import Poller
from controlplane.monitors.models import MonitorRule
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.fleet import (
    Fleet,
    drive,
    make_task,
    register_fleet,
    run_closed,
    start_run,
    stop_all_crawls,
)
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]


@pytest.fixture(scope="module")
def monitor_nodes(
    tmp_path_factory: pytest.TempPathFactory, crawler_egg: EggFile, failproject_egg: EggFile
) -> Iterator[list[ScrapydNode]]:
    factory = NodeFactory(tmp_path_factory.mktemp("monitor-nodes"))
    try:
        nodes = factory(2, max_proc=3, poll_interval=0.2)
        for node in nodes:
            node.deploy(crawler_egg)
            node.deploy(failproject_egg)
        yield nodes
    finally:
        factory.close()


@pytest.fixture
def crawl_fleet(transactional_db, fast, cp_web, monitor_nodes, crawler_egg) -> Iterator[Fleet]:
    fast.CRAWLFLEET_PUBLIC_URL = cp_web  # where the spiders report and heartbeat
    fleet = register_fleet(monitor_nodes, crawler_egg, capacities=3)
    yield fleet
    stop_all_crawls(monitor_nodes)


@pytest.fixture
def raised() -> Iterator[list[events.Event]]:
    """Every event raised while the test runs."""
    seen: list[events.Event] = []

    def receive(sender: Any, event: events.Event, **kwargs: Any) -> None:
        seen.append(event)

    events.event_raised.connect(receive, weak=False)
    yield seen
    events.event_raised.disconnect(receive)


def books_task(fleet: Fleet, site: Any, **fields: Any) -> Task:
    args = {"start_url": f"{site.base_url}/catalogue/page-1.html", **fields.pop("args", {})}
    return make_task(
        fleet,
        "books",
        args=args,
        settings={"CRAWLFLEET_CSV_DIR": "", **fields.pop("settings", {})},
        error_threshold=1000,
        max_attempts=fields.pop("max_attempts", 1),
        **fields,
    )


def rule(task: Task, kind: str, outcome: str = "degraded", **params: Any) -> MonitorRule:
    from controlplane.monitors import services

    return services.save_rule(
        services.new_rule(task.project, task), {"kind": kind, "params": params, "outcome": outcome}
    )


def finish(poller: Poller, run: TaskRun, timeout: float = 90) -> TaskRun:
    return drive(poller, run_closed(run), timeout=timeout)


def test_fewer_items_than_the_history_degrade_the_run_and_say_so(
    crawl_fleet, poller, fresh_demo_site, raised
):
    task = books_task(crawl_fleet, fresh_demo_site, max_attempts=2)
    rule(task, "history", percent=60, runs=3)
    history = [start_run(task) for _ in range(3)]
    for run in history:
        finish(poller, run)
        assert run.state == TaskRun.State.SUCCEEDED, run.reason
    for job in Job.objects.filter(run__in=history):
        assert job.items == 60
        # Too little history for the rule: it is reported as not evaluated, never as passed.
        assert job.monitor_report["not_evaluated"][0]["why"].endswith("3 needed to compare")

    task.args = {**task.args, "max_pages": 1}
    task.save()
    run = finish(poller, start_run(task))
    job = run.jobs.get()  # degraded is never retried
    assert job.state == Job.State.DEGRADED, job.reason
    assert job.items == 20
    assert job.cause == "monitor"
    assert job.reason == (
        "broke a monitor: 20 items, below 60% of the median 60 of the last 3 runs"
    )
    breach = job.monitor_report["breaches"][0]
    assert breach["figures"] == {"items": 20, "median": 60, "runs": 3, "percent": 60.0}
    assert run.state == TaskRun.State.DEGRADED
    assert run.reason == f"shard 0: {job.reason}"
    kinds = [e.kind for e in raised]
    assert kinds.count(events.MONITOR_BREACHED) == 1
    assert kinds.count(events.RUN_DEGRADED) == 1
    assert events.JOB_FAILED not in kinds


def test_a_foreign_egg_is_judged_from_its_log_and_says_what_it_could_not_judge(
    crawl_fleet, poller, failproject_egg, monitor_nodes
):
    fleet = register_fleet(monitor_nodes, failproject_egg, capacities=3)
    task = make_task(fleet, "ok", args={"count": "3"}, max_attempts=1)
    rule(task, "min_items", "failed", count=10)
    rule(task, "field_coverage", field="url", percent=90)
    run = finish(poller, start_run(task))
    job = run.jobs.get()
    assert not job.reported_final  # no report extension: the stats come from the log
    assert job.state == Job.State.FAILED
    assert job.reason == "broke a monitor: 3 items, below the minimum of 10"
    assert run.state == TaskRun.State.FAILED
    skipped = job.monitor_report["not_evaluated"]
    assert [s["why"] for s in skipped] == [
        "the crawl sent no field counts (no crawlfleet coverage pipeline)"
    ]
    assert Project.objects.filter(name="failproject").exists()


def test_an_empty_field_degrades_the_run(crawl_fleet, poller, fresh_demo_site):
    fresh_demo_site.config = replace(fresh_demo_site.config, blank_fields=frozenset({"rating"}))
    task = books_task(crawl_fleet, fresh_demo_site)
    rule(task, "field_coverage", field="rating", percent=90)
    rule(task, "field_coverage", field="title", percent=90)
    run = finish(poller, start_run(task))
    job = run.jobs.get()
    assert job.state == Job.State.DEGRADED, job.reason
    assert job.reason == "broke a monitor: field 'rating' filled in 0 of 60 items (0%), below 90%"
    held = [h["rule_text"] for h in job.monitor_report["held"]]
    assert held == ["field 'title' filled in at least 90%"]


def test_too_many_403s_fail_the_job_which_is_retried_then_the_run_fails(
    crawl_fleet, poller, fresh_demo_site, raised
):
    fresh_demo_site.config = replace(fresh_demo_site.config, forbidden_share=0.2)
    task = books_task(crawl_fleet, fresh_demo_site, max_attempts=2)
    rule(task, "status_share", "failed", status=403, percent=10)
    run = finish(poller, start_run(task))
    forbidden = len(fresh_demo_site.config.forbidden_books())  # 11 of the 60 books
    responses = 1 + 3 + 60  # robots.txt, the list pages, the detail pages
    share = f"{100 * forbidden / responses:.1f}%"
    first, second = run.jobs.order_by("attempt")
    for job in (first, second):
        assert job.state == Job.State.FAILED
        assert job.cause == "monitor"
        assert job.reason == (
            f"broke a monitor: HTTP 403 on {forbidden} of {responses} responses ({share}), "
            "above 10%"
        )
    assert second.retry_of_id == first.pk
    assert run.state == TaskRun.State.FAILED
    kinds = [e.kind for e in raised]
    assert kinds.count(events.JOB_FAILED) == 2
    assert kinds.count(events.RETRIES_EXHAUSTED) == 1


def test_a_stalled_crawl_is_stopped_and_failed(crawl_fleet, poller, fresh_demo_site, raised):
    fresh_demo_site.config = replace(fresh_demo_site.config, stall_after=10)
    # Requests to a stalled site hang: a short download timeout lets the stopped crawl close.
    task = books_task(crawl_fleet, fresh_demo_site, settings={"DOWNLOAD_TIMEOUT": 3})
    rule(task, "stall", "failed", seconds=5)
    run = finish(poller, start_run(task), timeout=120)
    job = run.jobs.get()
    assert job.state == Job.State.FAILED, job.reason
    assert job.cause == "stalled"
    assert job.reason.startswith("stalled: no new items or pages for "), job.reason
    assert "(limit 5 s): stuck at 10 items" in job.reason
    assert job.monitor_report["breaches"][0]["kind"] == "stall"
    assert [e.kind for e in raised].count(events.MONITOR_BREACHED) == 1
