"""Failure detection and recovery end to end, on real Scrapyd nodes.

Each way a crawl can fail is produced for real (an exception in a callback, in ``__init__``, a
hang past ``max_runtime``, a SIGKILL of the crawl process), then the poller must classify it
and the retry must run on another node. Then the control plane's own processes: two poller
replicas never retry a failure twice. Killed nodes and a killed control plane are in tests/chaos.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import pytest
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.scheduling.models import TaskRun
from tests.fixtures.fleet import (
    describe_jobs,
    drive,
    job_state,
    make_task,
    run_closed,
    start_run,
)

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]
# fast, module_nodes, fleet and poller come from tests/fixtures/fleet.py (module_nodes is
# module-scoped: this module gets nodes of its own).


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


# --- a Scrapyd killed mid-job: tests/chaos/test_node_kill.py (with Kafka and the group kill) ---


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


# The control plane killed and restarted mid-run: tests/chaos/test_control_plane_kill.py.
