"""Chains end to end, on real Scrapyd nodes: a run of B starts when a run of A ends.

The failproject spiders ``ok`` (succeeds) and ``callback_error`` (fails) play A; the poller
closes A's run and starts B's in the same transaction; the dispatcher sends B like any run.
Then real processes: two pollers and a scheduler, with a chained-only task (no cron) the
scheduler must leave alone, and every upstream run starts its downstream exactly once.

Refusals, pages and the fan-out hook on rows are in test_chains_rules.py.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.runs import create_run
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.common import wait_until
from tests.fixtures.fleet import describe_jobs, drive, make_task, run_closed, start_run

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]
# fast, module_nodes, fleet and poller come from tests/fixtures/fleet.py.


def chained_runs(task: Task) -> list[TaskRun]:
    return list(task.runs.filter(trigger=TaskRun.Trigger.CHAIN).order_by("pk"))


def all_closed(task: Task, count: int):
    def check() -> list[TaskRun] | None:
        runs = chained_runs(task)
        done = len(runs) == count and all(r.state != TaskRun.State.ACTIVE for r in runs)
        return runs if done else None

    return check


def test_a_success_starts_the_tasks_after_it_with_the_upstream_run_as_arguments(fleet, poller):
    a = make_task(fleet, "ok", max_attempts=1, args={"count": "4"})
    b = make_task(fleet, "ok", name="b", cron="", after_task=a, pass_upstream=True)
    c = make_task(fleet, "ok", name="c", cron="", after_task=a)  # fan-out of chains
    run = start_run(a)
    drive(poller, run_closed(run))
    assert run.state == TaskRun.State.SUCCEEDED, describe_jobs()
    [run_b] = drive(poller, all_closed(b, 1))
    [run_c] = drive(poller, all_closed(c, 1))

    assert (run_b.upstream_run, run_c.upstream_run) == (run, run)
    assert (run_b.state, run_c.state) == (TaskRun.State.SUCCEEDED, TaskRun.State.SUCCEEDED)
    job_b = run_b.jobs.get()
    assert job_b.node_id is not None
    assert job_b.scrapyd_job_id
    upstream_items = run.jobs.get().items
    assert upstream_items == 4
    assert job_b.args == {
        "upstream_run": str(run.pk),
        "upstream_task": a.name,
        "upstream_state": "succeeded",
        "upstream_items": "4",
        "upstream_pages": str(run.jobs.get().pages),
        "upstream_errors": "0",
    }
    assert run_c.jobs.get().args == {}  # no pass_upstream: only its own arguments
    # B's run ending starts nothing more: nothing runs after B.
    assert TaskRun.objects.filter(trigger=TaskRun.Trigger.CHAIN).count() == 2


def test_a_failure_starts_only_the_tasks_that_run_after_it_always(fleet, poller):
    a = make_task(fleet, "callback_error", max_attempts=1)
    on_success = make_task(fleet, "ok", name="on-success", cron="", after_task=a)
    always = make_task(
        fleet,
        "ok",
        name="always",
        cron="",
        after_task=a,
        after_condition=Task.AfterCondition.ALWAYS,
        pass_upstream=True,
    )
    run = start_run(a)
    drive(poller, run_closed(run))
    assert run.state == TaskRun.State.FAILED, describe_jobs()
    [chained] = drive(poller, all_closed(always, 1))
    assert chained.upstream_run == run
    assert chained.state == TaskRun.State.SUCCEEDED, describe_jobs()
    assert chained.jobs.get().args["upstream_state"] == "failed"
    assert not on_success.runs.exists()


def _lines(processes, pattern: str) -> list[str]:
    return [
        line
        for proc in processes
        for line in proc.log_tail(10**7).splitlines()
        if re.search(pattern, line)
    ]


def test_two_pollers_start_each_downstream_run_once(fleet, cp_process):
    pollers = [cp_process("poller", name=f"poller-{i}") for i in range(2)]
    scheduler = cp_process("scheduler", name="scheduler")
    processes = [*pollers, scheduler]
    a = make_task(fleet, "ok", max_attempts=1)
    b = make_task(fleet, "ok", name="after-a", cron="", after_task=a, pass_upstream=True)
    now = timezone.now()
    upstream = [
        create_run(a, now + timedelta(milliseconds=n), TaskRun.Trigger.MANUAL) for n in range(4)
    ]

    def done() -> list[TaskRun] | None:
        for proc in processes:
            assert proc.alive(), f"{proc.name} died:\n{proc.log_tail()}"
        return all_closed(b, len(upstream))()

    runs = wait_until(done, timeout=120, what="the chained runs", interval=0.2)
    assert sorted(r.upstream_run_id for r in runs) == sorted(r.pk for r in upstream)
    assert all(r.state == TaskRun.State.SUCCEEDED for r in runs), describe_jobs()
    assert Job.objects.filter(run__task=b).count() == len(upstream)
    # One poller closed each upstream run and started its downstream; the other did nothing.
    started = _lines(pollers, rf"of {b.name} \(active\) started after run")
    assert len(started) == len(upstream), started
    assert not _lines(pollers, "was already started after run")
    # The scheduler dispatched the chained runs and never tried to schedule the task itself.
    assert not _lines([scheduler], rf"task {b.name} is not scheduled")
    for proc in pollers:
        proc.stop()
        assert proc.proc.returncode == 0, proc.log_tail()
