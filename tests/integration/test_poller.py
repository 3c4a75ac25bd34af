"""The poller against real Scrapyd nodes: tracking, cancel, retry-now, health, completion.

The poller runs in this process (``Poller.cycle()``) so each step can be checked as it happens;
tests/integration/test_failures.py runs it as ``crawlfleet poller`` processes. The fleet, the fast settings
and the helpers that drive it come from tests/fixtures/fleet.py.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from controlplane.jobs import completion, tracking
from controlplane.jobs import dispatch as dispatcher
from controlplane.jobs.models import Job
from controlplane.jobs.nodeview import Listing, NodeSession
from controlplane.jobs.operations import OperationError, cancel_job, retry_now
from controlplane.jobs.tracking import Tracker
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.fleet import (
    FAST,
    Fleet,
    describe_jobs,
    drive,
    job_state,
    make_task,
    run_closed,
    start_run,
)
from tests.fixtures.jobs import create_adhoc_run
from tests.fixtures.scrapyd import HANG_READY

pytestmark = [pytest.mark.scrapyd]


def wait_opened(fleet: Fleet, job: Job, timeout: float = 30.0) -> None:
    """Until the crawl has installed its signal handlers (a stop before that kills it)."""
    job.refresh_from_db()
    node = fleet.process(job.node_id)
    node.wait_for_log(job.project.name, job.spider, job.scrapyd_job_id, HANG_READY, timeout)


def blackhole() -> tuple[socket.socket, str]:
    """A port that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- tracking --------------------------------------------------------------------------------
def test_job_is_followed_to_success(fleet, poller):
    job = create_adhoc_run(fleet.project, "sleepy", args={"seconds": "1.5"})
    running = drive(poller, job_state(job, Job.State.RUNNING, *Job.FINAL), timeout=30)
    assert running.state == Job.State.RUNNING, describe_jobs()
    assert running.started_at is not None
    assert running.log_url.endswith(f"/logs/failproject/sleepy/{job.scrapyd_job_id}.log")
    done = drive(poller, job_state(job, *Job.FINAL), timeout=30)
    assert done.state == Job.State.SUCCEEDED, done.reason
    assert (done.items, done.exit_status, done.finish_reason) == (1, 0, "finished")
    assert done.stats["item_scraped_count"] == 1
    assert done.finished_at >= done.started_at
    run = drive(poller, run_closed(done.run), timeout=10)
    assert run.state == TaskRun.State.SUCCEEDED
    assert completion.progress(run).items == 1


def test_dispatch_that_never_arrived_is_queued_again(fleet, poller):
    row = fleet.rows[0]
    job = create_adhoc_run(fleet.project, "ok")
    long_ago = timezone.now() - timedelta(seconds=FAST["CRAWLFLEET_DISPATCH_GRACE"] + 1)
    job.transition([Job.State.QUEUED], Job.State.DISPATCHING, node=row, dispatched_at=long_ago)
    fresh = create_adhoc_run(fleet.project, "ok")
    fresh.transition(
        [Job.State.QUEUED], Job.State.DISPATCHING, node=row, dispatched_at=timezone.now()
    )
    poller.cycle()
    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.state == Job.State.QUEUED
    assert job.node is None
    assert job.avoid_nodes == [row.pk]
    assert "never received" in job.reason
    assert fresh.state == Job.State.DISPATCHING  # still within the grace period


def test_job_the_node_forgot_is_lost_and_retried_elsewhere(fleet, poller):
    task = make_task(fleet, "ok", max_attempts=2)
    run = start_run(task)
    job = run.jobs.get()
    row = fleet.rows[1]
    job.transition([Job.State.QUEUED], Job.State.PENDING, node=row, dispatched_at=timezone.now())
    poller.cycle()
    job.refresh_from_db()
    assert job.state == Job.State.LOST, describe_jobs()
    assert "no longer knows it" in job.reason
    retry = job.retried_by
    assert (retry.attempt, retry.avoid_nodes, retry.state) == (2, [row.pk], Job.State.QUEUED)
    drive(poller, run_closed(run), timeout=30)
    retry.refresh_from_db()
    assert retry.state == Job.State.SUCCEEDED
    assert retry.node_id != row.pk
    assert run.state == TaskRun.State.SUCCEEDED


def test_stale_heartbeat_stops_the_job_as_failed(fleet, poller):
    task = make_task(fleet, "hang", max_attempts=1)
    run = start_run(task)
    job = run.jobs.get()
    drive(poller, job_state(job, Job.State.RUNNING), timeout=30)
    wait_opened(fleet, job)
    stale = timezone.now() - timedelta(seconds=FAST["CRAWLFLEET_HEARTBEAT_TIMEOUT"] + 5)
    Job.objects.filter(pk=job.pk).update(last_heartbeat=stale)
    drive(poller, run_closed(run), timeout=30)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.reason.startswith("no heartbeat for 2")
    assert "finish reason 'shutdown'" in job.reason
    assert run.state == TaskRun.State.FAILED


# --- operations ------------------------------------------------------------------------------
def test_cancel_queued_and_running_jobs(fleet, poller):
    task = make_task(fleet, "hang", max_attempts=3)
    queued = start_run(task).jobs.get()
    assert cancel_job(queued) == "cancelled before it was dispatched"
    queued.refresh_from_db()
    assert queued.state == Job.State.CANCELLED
    with pytest.raises(OperationError):
        cancel_job(queued)

    run = start_run(task)
    job = run.jobs.get()
    drive(poller, job_state(job, Job.State.RUNNING), timeout=30)
    wait_opened(fleet, job)
    assert cancel_job(job).startswith("stopping on")
    assert cancel_job(job) == "a stop was already requested"
    drive(poller, run_closed(run), timeout=30)
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED, job.reason
    assert "finish reason 'shutdown'" in job.reason
    assert run.state == TaskRun.State.CANCELLED
    assert not Job.objects.filter(retry_of=job).exists()  # cancelled jobs are not retried


def test_cancel_a_job_waiting_in_a_node_queue(fleet, poller):
    target = fleet.nodes[2]
    blockers = [target.schedule("failproject", "hang", version=fleet.version.version) for _ in "ab"]
    for blocker in blockers:
        target.running_job(blocker)
    task = make_task(fleet, "ok", selector=Task.Selector.NODES)
    task.selector_nodes.set([fleet.row(target)])
    Node.objects.filter(pk=fleet.row(target).pk).update(capacity=3)
    run = start_run(task)
    job = run.jobs.get()
    drive(poller, job_state(job, Job.State.PENDING), timeout=20)
    assert cancel_job(job) == f"removed from {fleet.row(target).name}'s queue"
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    poller.cycle()
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED


def test_retry_now_ignores_max_attempts(fleet, poller):
    job = create_adhoc_run(fleet.project, "callback_error")
    drive(poller, run_closed(job.run), timeout=30)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert not Job.objects.filter(retry_of=job).exists()  # ad-hoc: one attempt
    assert job.run.state == TaskRun.State.FAILED

    retry = retry_now(job)
    assert (retry.attempt, retry.retry_of_id, retry.not_before) == (2, job.pk, None)
    job.run.refresh_from_db()
    assert job.run.state == TaskRun.State.ACTIVE
    drive(poller, job_state(retry, *Job.FINAL), timeout=30)
    with pytest.raises(OperationError, match="already retried"):
        retry_now(job)
    assert retry.state == Job.State.FAILED
    assert retry.node_id != job.node_id
    drive(poller, run_closed(job.run), timeout=10)
    with pytest.raises(OperationError, match="only ended, unsuccessful"):
        retry_now(create_adhoc_run(fleet.project, "ok"))


def test_retry_now_starts_a_waiting_retry_at_once(fleet, poller):
    task = make_task(fleet, "init_error", max_attempts=2, retry_backoff=3600)
    run = start_run(task)
    job = run.jobs.get()
    drive(poller, lambda: Job.objects.filter(retry_of=job).first(), timeout=30)
    waiting = Job.objects.get(retry_of=job)
    assert waiting.not_before > timezone.now() + timedelta(seconds=3000)
    assert retry_now(job).pk == waiting.pk
    waiting.refresh_from_db()
    assert waiting.not_before is None


# --- health ----------------------------------------------------------------------------------
def test_node_down_loses_its_jobs_and_a_returning_node_is_synced(fleet, poller, monkeypatch):
    synced: list[str] = []
    monkeypatch.setattr(tracking, "sync_node", lambda node: synced.append(node.name))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
    dead = Node.objects.create(name="dead", url=dead_url, state=Node.State.UP)
    job = create_adhoc_run(fleet.project, "ok")
    job.transition([Job.State.QUEUED], Job.State.RUNNING, node=dead, started_at=timezone.now())

    poller.cycle()
    dead.refresh_from_db()
    assert dead.state == Node.State.DEGRADED
    drive(poller, job_state(job, Job.State.LOST), timeout=15, dispatch=False)
    dead.refresh_from_db()
    assert dead.state == Node.State.DOWN
    assert job.reason.startswith("node dead down since")
    closed.close()

    # It comes back (here: at the address of a live node) and is brought up to date first.
    Node.objects.filter(pk=fleet.rows[0].pk).update(url="http://127.0.0.1:1/")
    Node.objects.filter(pk=dead.pk).update(url=fleet.nodes[0].url)
    poller.cycle()
    dead.refresh_from_db()
    assert dead.state == Node.State.UP
    assert synced == ["dead"]


def test_a_blackholed_node_never_stalls_the_others(fleet, poller, fast):
    fast.CRAWLFLEET_NODE_TIMEOUT = 5.0
    sock, url = blackhole()
    try:
        hole = Node.objects.create(name="hole", url=url, state=Node.State.UP)
        before = timezone.now()
        first = poller.cycle()
        assert first.still_running == ["hole"]
        assert sorted(first.polled) == sorted(row.name for row in fleet.rows)
        assert first.duration < 2.0, first
        for row in fleet.rows:
            row.refresh_from_db()
            assert row.last_checked >= before
            assert row.state == Node.State.UP
        second = poller.cycle()
        assert second.skipped == ["hole"]
        assert second.duration < 2.0, second
        # Its own thread records the failure when its timeout expires.
        deadline = time.monotonic() + 10
        while Node.objects.get(pk=hole.pk).consecutive_failures == 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        sock.close()


# --- run completion --------------------------------------------------------------------------
def _job(run: TaskRun, fleet: Fleet, shard: int, attempt: int, state: str, **fields) -> Job:
    return Job.objects.create(
        run=run,
        shard=shard,
        attempt=attempt,
        state=state,
        project=fleet.project,
        spider="ok",
        version=fleet.version,
        **fields,
    )


def test_fanout_run_completion_progress_and_redis_cleanup(fleet, redis_server, fast):
    fast.CRAWLFLEET_REDIS_URL = redis_server.url
    task = make_task(fleet, "ok", fanout=2, max_attempts=2)
    run = TaskRun.objects.create(task=task, scheduled_for=timezone.now(), crawl_id="fan-abc")
    other = "crawlfleet:shared:{ok:other}:requests"
    client = redis_server.client()
    keys = [f"crawlfleet:shared:{{ok:fan-abc}}:{name}" for name in ("requests", "dupefilter", "x")]
    for key in [*keys, other]:
        client.set(key, "1")

    lost = _job(run, fleet, 0, 1, Job.State.LOST, items=5, pages=6)
    done = _job(run, fleet, 1, 1, Job.State.SUCCEEDED, items=7, pages=8, errors=1)
    assert completion.evaluate(run) is None  # shard 0 still has a retry coming
    retry = _job(run, fleet, 0, 2, Job.State.RUNNING, retry_of=lost, items=3, pages=3)
    assert completion.evaluate(run) is None
    progress = completion.progress(run)
    assert (progress.items, progress.pages, progress.errors) == (15, 17, 1)
    assert (progress.shards, progress.shards_done, progress.shards_active) == (2, 1, 1)
    assert progress.per_shard[0]["items"] == 8

    Job.objects.filter(pk=retry.pk).update(state=Job.State.SUCCEEDED)
    assert completion.sweep() == 1
    run.refresh_from_db()
    assert run.state == TaskRun.State.SUCCEEDED
    assert run.finished_at is not None
    assert not any(client.exists(key) for key in keys)
    assert client.exists(other)
    assert completion.sweep() == 0
    assert done.pk


def test_run_fails_when_a_shard_has_no_retry_left(fleet):
    task = make_task(fleet, "ok", fanout=2, max_attempts=2)
    run = TaskRun.objects.create(task=task, scheduled_for=timezone.now())
    first = _job(run, fleet, 0, 1, Job.State.FAILED, reason="boom")
    _job(run, fleet, 1, 1, Job.State.SUCCEEDED)
    assert completion.evaluate(run) is None
    _job(run, fleet, 0, 2, Job.State.TIMED_OUT, retry_of=first, reason="too slow")
    state, reason = completion.evaluate(run)
    assert state == TaskRun.State.FAILED
    assert reason == "shard 0 attempt 2 timed_out: too slow"


def test_racing_pollers_classify_and_retry_a_job_once(fleet, caplog):
    """Two pollers reconciling the same ended job: one transition wins, one retry exists."""
    task = make_task(fleet, "callback_error", max_attempts=2)
    job = start_run(task).jobs.get()
    dispatcher.dispatch()
    job.refresh_from_db()
    node = fleet.process(job.node_id)
    node.finished_job(job.scrapyd_job_id, timeout=30)
    listing = Listing.from_api(node.listjobs())
    barrier = threading.Barrier(2)

    def reconcile() -> None:
        try:
            row = Node.objects.get(pk=job.node_id)
            mine = Job.objects.select_related("run__task", "project").get(pk=job.pk)
            session = NodeSession(row)
            barrier.wait()
            Tracker().reconcile(mine, listing, session, timezone.now())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reconcile) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert Job.objects.filter(retry_of=job).count() == 1
    ended = [r for r in caplog.records if "(callback_error, attempt 1) failed" in r.getMessage()]
    assert len(ended) == 1
