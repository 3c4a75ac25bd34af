"""Failure detection and recovery end to end, on real Scrapyd nodes.

Each way a crawl can fail is produced for real (an exception in a callback, in ``__init__``, a
hang past ``max_runtime``, a SIGKILL of the crawl process, a SIGKILL of Scrapyd itself), then
the poller must classify it and the retry must run on another node. Then the control plane's
own processes: two poller replicas never retry a failure twice, and a restarted control plane
picks up where it was.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.loops.poller import Poller
from controlplane.nodes.models import Node
from controlplane.scheduling.models import TaskRun
from tests.fixtures.fleet import (
    describe_jobs,
    drive,
    job_state,
    make_task,
    register_fleet,
    run_closed,
    start_run,
    stop_all_crawls,
)
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]
# fast, module_nodes, fleet and poller come from tests/fixtures/fleet.py (module_nodes is
# module-scoped: this module gets nodes of its own).


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def attempts(run: TaskRun) -> list[Job]:
    return list(run.jobs.order_by("attempt"))


# --- every failure kind -----------------------------------------------------------------------
def test_each_failure_kind_is_classified_and_retried_on_another_node(fleet, poller):
    callback = start_run(make_task(fleet, "callback_error", max_attempts=2))
    init = start_run(make_task(fleet, "init_error", max_attempts=2))
    hang = start_run(make_task(fleet, "hang", max_attempts=2, max_runtime=3))
    killed = start_run(make_task(fleet, "sleepy", max_attempts=2, args={"seconds": "4"}))
    runs = [callback, init, hang, killed]

    # Kill the first attempt of `sleepy` as the OOM killer would, once its process runs.
    victim = killed.jobs.get()
    drive(poller, job_state(victim, Job.State.RUNNING), timeout=40)
    entry = fleet.process(victim.node_id).running_job(victim.scrapyd_job_id)
    os.kill(entry["pid"], signal.SIGKILL)

    drive(poller, lambda: all(run_closed(run)() for run in runs), timeout=90)
    for run in runs:
        first, second = attempts(run)
        assert second.retry_of_id == first.pk
        assert second.node_id != first.node_id, describe_jobs()
        assert first.node_id in second.avoid_nodes

    first, second = attempts(callback)
    assert first.state == second.state == Job.State.FAILED
    assert first.exit_status == 0
    assert first.errors == 1
    assert first.reason == "1 ERROR log line(s), more than the threshold of 0"
    assert callback.state == TaskRun.State.FAILED

    first, second = attempts(init)
    assert first.state == second.state == Job.State.FAILED
    assert first.exit_status == 1
    assert first.reason == (
        "exited with status 1: RuntimeError: init_error: deliberate failure in __init__"
    )
    assert first.stats == {}

    first, second = attempts(hang)
    assert first.state == second.state == Job.State.TIMED_OUT
    assert first.reason.startswith("ran longer than max_runtime (3 s); stopped (")
    assert first.finished_at - first.started_at >= timezone.timedelta(seconds=3)
    assert hang.state == TaskRun.State.FAILED

    first, second = attempts(killed)
    assert first.state == Job.State.FAILED
    assert first.reason == "killed by SIGKILL"
    assert first.exit_status == -signal.SIGKILL
    assert second.state == Job.State.SUCCEEDED
    assert second.items == 1
    assert killed.state == TaskRun.State.SUCCEEDED


# --- a Scrapyd killed mid-job -----------------------------------------------------------------
@pytest.fixture
def victim_node(scrapyd_nodes: NodeFactory, crawler_egg: EggFile) -> ScrapydNode:
    node = scrapyd_nodes(1, max_proc=2, poll_interval=0.2)[0]
    node.deploy(crawler_egg)
    return node


def test_killed_scrapyd_loses_the_job_which_completes_elsewhere_and_the_orphan_stops(
    fast,
    cp_web,
    module_nodes,
    victim_node,
    crawler_egg,
    fresh_demo_site,
):
    fast.CRAWLFLEET_PUBLIC_URL = cp_web  # where the spiders report and heartbeat
    for node in module_nodes:
        node.deploy(crawler_egg)
    fleet = register_fleet([victim_node, *module_nodes], crawler_egg)
    others = [fleet.row(n).pk for n in module_nodes]
    fresh_demo_site.config.delay = 1.0  # slow enough to be killed mid-crawl
    task = make_task(
        fleet,
        "books",
        max_attempts=2,
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"CRAWLFLEET_CSV_DIR": ""},
        error_threshold=1000,
    )
    poller = Poller()
    try:
        # The first attempt goes to the victim: the other nodes are closed for now.
        Node.objects.filter(pk__in=others).update(enabled=False)
        run = start_run(task)
        job = run.jobs.get()
        drive(poller, lambda: job_state(job, Job.State.RUNNING)() and job.last_heartbeat)
        assert job.node_id == fleet.row(victim_node).pk
        orphan = victim_node.running_job(job.scrapyd_job_id)["pid"]
        Node.objects.filter(pk__in=others).update(enabled=True)

        victim_node.kill()  # SIGKILL Scrapyd only: the crawl process lives on
        assert pid_alive(orphan)
        log = victim_node.dir / "logs" / "crawler" / "books" / f"{job.scrapyd_job_id}.log"

        def retried() -> Job | None:
            retry = Job.objects.filter(retry_of=job).first()
            if retry is not None:
                # Never beside the orphan: the retry exists only once the orphan is closing.
                assert "Closing spider" in log.read_text(), "retried beside a live orphan"
            return retry

        drive(poller, retried, timeout=60)
        job.refresh_from_db()
        assert job.state == Job.State.LOST
        assert job.reason.startswith(f"node {fleet.row(victim_node).name} down since")
        fresh_demo_site.config.delay = 0.0
        drive(poller, run_closed(run), timeout=90)

        retry = job.retried_by
        assert retry.state == Job.State.SUCCEEDED, retry.reason
        assert retry.node_id in others
        assert retry.items > 0
        assert run.state == TaskRun.State.SUCCEEDED
        deadline = time.monotonic() + 30
        while pid_alive(orphan):
            assert time.monotonic() < deadline, "the orphan was never stopped"
            time.sleep(0.2)
        text = log.read_text()
        assert "the control plane asked this crawl to stop" in text
        assert "Spider closed (stopped_by_controlplane)" in text
    finally:
        poller.close()
        stop_all_crawls(module_nodes)


# --- the control plane's own processes --------------------------------------------------------
def _poller_lines(processes, pattern: str) -> list[str]:
    lines = []
    for proc in processes:
        lines += [line for line in proc.log_tail(10**7).splitlines() if re.search(pattern, line)]
    return lines


def wait_until(check, *, timeout: float, processes=(), what: str = "condition"):
    """Poll ``check`` while the control-plane processes keep running."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        for proc in processes:
            assert proc.alive(), f"{proc.name} died:\n{proc.log_tail()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s; jobs:\n{describe_jobs()}"
        time.sleep(0.2)
    return result


def test_two_poller_replicas_never_double_retry(fleet, cp_process):
    pollers = [cp_process("poller", name=f"poller-{i}") for i in range(2)]
    scheduler = cp_process("scheduler", name="scheduler")
    task = make_task(fleet, "callback_error", max_attempts=3)
    runs = [start_run(task) for _ in range(3)]
    wait_until(
        lambda: all(run_closed(run)() for run in runs),
        timeout=120,
        processes=[*pollers, scheduler],
        what="closed runs",
    )
    for run in runs:
        chain = attempts(run)
        assert [j.attempt for j in chain] == [1, 2, 3], describe_jobs()
        assert all(j.state == Job.State.FAILED for j in chain)
        assert [j.retry_of_id for j in chain] == [None, chain[0].pk, chain[1].pk]
        assert run.state == TaskRun.State.FAILED
    # Each failure was recorded by one poller only, and retried by that one only.
    ended = Counter(_poller_lines(pollers, r"job \d+ \(callback_error, attempt \d\) failed"))
    assert len(ended) == 9
    assert set(ended.values()) == {1}
    assert len(_poller_lines(pollers, r"will be retried as job")) == 6
    for poller in pollers:  # SIGTERM: the cycle in progress ends, then the process
        poller.stop()
        assert poller.proc.returncode == 0, poller.log_tail()


def test_restarted_control_plane_picks_up_where_it_was(fleet, cp_process):
    slow = start_run(make_task(fleet, "sleepy", max_attempts=2, args={"seconds": "3"}))
    failing = start_run(make_task(fleet, "callback_error", max_attempts=2))
    before = [cp_process("scheduler", name="scheduler-1"), cp_process("poller", name="poller-1")]
    jobs = [slow.jobs.get(), failing.jobs.get()]
    wait_until(
        lambda: all(job_state(job, Job.State.RUNNING, *Job.FINAL)() for job in jobs),
        timeout=40,
        processes=before,
        what="running jobs",
    )
    for proc in before:  # a crash: no chance to finish anything
        proc.signal_group(signal.SIGKILL)
        proc.proc.wait(timeout=10)

    # While the control plane is down, both crawls end on their nodes and a run is requested.
    for job in jobs:
        fleet.process(job.node_id).finished_job(job.scrapyd_job_id, timeout=30)
    slow_job = slow.jobs.get()
    assert slow_job.state == Job.State.RUNNING
    later = start_run(make_task(fleet, "ok"))

    after = [cp_process("scheduler", name="scheduler-2"), cp_process("poller", name="poller-2")]
    runs = [slow, failing, later]
    wait_until(
        lambda: all(run_closed(run)() for run in runs),
        timeout=60,
        processes=after,
        what="closed runs",
    )
    slow_job.refresh_from_db()
    assert slow_job.state == Job.State.SUCCEEDED
    assert slow.state == TaskRun.State.SUCCEEDED
    first, second = attempts(failing)
    assert first.state == second.state == Job.State.FAILED
    assert second.node_id != first.node_id
    assert failing.state == TaskRun.State.FAILED
    assert later.state == TaskRun.State.SUCCEEDED
