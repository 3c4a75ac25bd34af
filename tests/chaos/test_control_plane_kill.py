"""The whole control plane (web, scheduler, poller) SIGKILLed mid-run, then started again.

While it is down, crawls end on their nodes (one of them tries to send its final report to the
dead web server), and a run is requested. After the restart every job reaches its final state:
the ended ones are recorded from the nodes, the failed one is retried on another node, the new
run is dispatched. This began as ``test_restarted_control_plane_picks_up_where_it_was`` in
tests/integration/test_failures.py (scheduler and poller only); the web server and a reporting
crawl were added here.
"""

from __future__ import annotations

import signal

import pytest

from controlplane.jobs.models import Job
from controlplane.lib.procutil import free_port
from controlplane.scheduling.models import TaskRun
from tests.chaos.helpers import wait_for
from tests.fixtures.fleet import job_state, make_task, register_fleet, run_closed, start_run

pytestmark = [pytest.mark.chaos, pytest.mark.scrapyd, pytest.mark.slow]
# fast, module_nodes and fleet come from tests/fixtures/fleet.py.


def attempts(run: TaskRun) -> list[Job]:
    return list(run.jobs.order_by("attempt"))


def test_killed_control_plane_restarts_and_every_job_reaches_its_end(
    fleet, cp_env, cp_process, module_nodes, crawler_egg, fresh_demo_site
):
    for node in module_nodes:
        node.deploy(crawler_egg)
    crawler = register_fleet(module_nodes, crawler_egg)
    port = free_port()
    cp_env["CRAWLFLEET_PUBLIC_URL"] = f"http://127.0.0.1:{port}"  # where spiders report

    def start_control_plane(generation: int) -> list:
        web = cp_process("web", "--bind", f"127.0.0.1:{port}", name=f"web-{generation}")
        web.wait_for_port(port, timeout=90)
        return [
            web,
            cp_process("scheduler", name=f"scheduler-{generation}"),
            cp_process("poller", name=f"poller-{generation}"),
        ]

    slow = start_run(make_task(fleet, "sleepy", max_attempts=2, args={"seconds": "3"}))
    failing = start_run(make_task(fleet, "callback_error", max_attempts=2))
    fresh_demo_site.config.delay = 0.2  # a few seconds of crawling, which the outage spans
    books = start_run(
        make_task(
            crawler,
            "books",
            args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
            settings={"CRAWLFLEET_CSV_DIR": "", "CONCURRENT_REQUESTS_PER_DOMAIN": "2"},
        )
    )
    before = start_control_plane(1)
    jobs = [slow.jobs.get(), failing.jobs.get(), books.jobs.get()]
    wait_for(
        lambda: (
            all(job_state(job, Job.State.RUNNING, *Job.FINAL)() for job in jobs)
            and jobs[2].last_heartbeat is not None
        ),
        timeout=40,
        what="running jobs",
        processes=before,
    )
    for proc in before:  # a crash: no chance to finish anything
        proc.signal_group(signal.SIGKILL)
        proc.proc.wait(timeout=10)

    # While the control plane is down, every crawl ends on its node and a run is requested.
    for job in jobs:
        fleet.process(job.node_id).finished_job(job.scrapyd_job_id, timeout=60)
    slow_job, _, books_job = (Job.objects.get(pk=job.pk) for job in jobs)
    assert slow_job.state == books_job.state == Job.State.RUNNING
    later = start_run(make_task(fleet, "ok"))

    after = start_control_plane(2)
    runs = [slow, failing, books, later]
    wait_for(
        lambda: all(run_closed(run)() for run in runs),
        timeout=60,
        what="closed runs",
        processes=after,
    )
    slow_job.refresh_from_db()
    assert slow_job.state == Job.State.SUCCEEDED
    assert slow.state == TaskRun.State.SUCCEEDED
    first, second = attempts(failing)
    assert first.state == second.state == Job.State.FAILED
    assert second.node_id != first.node_id
    assert failing.state == TaskRun.State.FAILED
    books_job.refresh_from_db()
    assert books_job.state == Job.State.SUCCEEDED, books_job.reason
    assert books_job.items == fresh_demo_site.config.books
    assert books.state == TaskRun.State.SUCCEEDED
    assert later.state == TaskRun.State.SUCCEEDED
