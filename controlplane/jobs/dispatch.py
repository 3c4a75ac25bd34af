"""The dispatcher: planned jobs sent to their nodes, and what the nodes answered recorded.

Sends run on long-lived threads, each keeping one keep-alive connection per node, and never
touch the database. A crawlfleet node takes each planned batch's jobs for it in one
``schedulebatch.json``; a node without it (stock Scrapyd) gets one ``schedule.json`` per job. As soon as every send to one node is answered, the outcomes are written in
one batch: accepted jobs become ``pending``; refused ones are queued again for another node;
unanswered ones stay ``dispatching`` for the poller to reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings as django_settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.placement import REFUSAL_DELAY, WRITE_LOCK, Placement, plan, update_each
from controlplane.lib import scrapyd
from controlplane.lib.scheduleconnection import (
    MAX_BATCH,
    BatchSupport,
    BatchUnsupported,
    ScheduleConnection,
    batch_entry,
)
from controlplane.lib.scrapyd import ScrapydError
from controlplane.nodes.models import Node
from controlplane.telemetry.histograms import FIRE_TO_DISPATCH

logger = logging.getLogger(__name__)


@dataclass
class SendResult:
    """What a node answered to one schedule.json (``accepted``, ``refused`` or ``unconfirmed``)."""

    placement: Placement
    outcome: str
    at: datetime
    error: str = ""


def report_settings(job: Job, token: str) -> dict[str, str]:
    """Settings that let the spider report its outcome and heartbeat to us."""
    base = django_settings.CRAWLFLEET_PUBLIC_URL.rstrip("/")
    return {
        "CRAWLFLEET_REPORT_URL": f"{base}/api/v1/report/{job.scrapyd_job_id}",
        "CRAWLFLEET_JOB_TOKEN": token,
        "CRAWLFLEET_HEARTBEAT_INTERVAL": str(django_settings.CRAWLFLEET_SPIDER_HEARTBEAT),
    }


_local = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _send_pool() -> ThreadPoolExecutor:
    """Long-lived sender threads, so their keep-alive connections to the nodes are reused."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=django_settings.CRAWLFLEET_DISPATCH_WORKERS,
                thread_name_prefix="dispatch",
            )
        return _pool


def _connection_to(node: Node) -> ScheduleConnection:
    """This thread's connection to ``node``."""
    connections: dict[tuple[str, str, str], ScheduleConnection] = _local.__dict__.setdefault(
        "connections", {}
    )
    key = (node.url, node.username, node.password)
    connection = connections.get(key)
    if connection is None:
        connection = connections[key] = ScheduleConnection(
            node.url, node.username, node.password, django_settings.CRAWLFLEET_NODE_TIMEOUT
        )
    return connection


def _call(job: Job, report_token: str) -> tuple[dict[str, str], dict[str, str]]:
    """The job's spider arguments and settings, with those that let its spider report to us."""
    args = dict(job.args)
    if job.run.crawl_id and "crawl_id" not in args:
        args["crawl_id"] = job.run.crawl_id
    return args, {**job.settings, **report_settings(job, report_token)}


def schedule_form(job: Job, report_token: str) -> list[tuple[str, str]]:
    """The job's schedule.json form."""
    args, job_settings = _call(job, report_token)
    return scrapyd.schedule_form(
        job.project.name, job.spider, job.version.version, job.scrapyd_job_id, job_settings, args
    )


def schedule_entry(job: Job, report_token: str) -> dict[str, object]:
    """The job's entry in a schedulebatch.json body: the same call as its form."""
    args, job_settings = _call(job, report_token)
    return batch_entry(
        job.project.name, job.spider, job.version.version, job.scrapyd_job_id, job_settings, args
    )


def send(placement: Placement) -> SendResult:
    """schedule.json on the placement's node; no database access (runs on sender threads)."""
    job, node = placement.job, placement.node
    try:
        _connection_to(node).schedule(schedule_form(job, placement.report_token))
    except ScrapydError as exc:
        outcome = "unconfirmed" if exc.unreachable else "refused"
        return SendResult(placement, outcome, timezone.now(), str(exc))
    return SendResult(placement, "accepted", timezone.now())


def send_one(placements: list[Placement]) -> list[SendResult]:
    return [send(placement) for placement in placements]


#: Nodes found without schedulebatch.json, asked again after a while (they may be upgraded).
BATCH_SUPPORT = BatchSupport()


def send_batch(placements: list[Placement]) -> list[SendResult]:
    """schedulebatch.json with jobs for one node; no database access (runs on sender threads)."""
    node = placements[0].node
    jobs = [schedule_entry(p.job, p.report_token) for p in placements]
    try:
        answers = _connection_to(node).schedule_batch(jobs)
    except BatchUnsupported:
        BATCH_SUPPORT.mark_unsupported(node.url)
        logger.info("node %s has no batch scheduling: one schedule.json per job", node.name)
        return send_one(placements)
    except ScrapydError as exc:
        outcome = "unconfirmed" if exc.unreachable else "refused"
        at = timezone.now()
        return [SendResult(p, outcome, at, str(exc)) for p in placements]
    at = timezone.now()
    return [
        SendResult(p, "refused" if answer.error else "accepted", at, answer.error)
        for p, answer in zip(placements, answers, strict=True)
    ]


def record(results: list[SendResult]) -> None:
    """Write the outcome of sends: accepted in one statement, refusals one by one (rare)."""
    accepted = []
    for result in results:
        job, node = result.placement.job, result.placement.node
        if result.outcome == "accepted":
            job.state, job.dispatched_at, job.updated_at = Job.State.PENDING, result.at, result.at
            accepted.append(job)
        elif result.outcome == "refused":
            logger.warning("node %s refused job %s: %s", node.name, job.pk, result.error)
            with WRITE_LOCK:
                job.transition(
                    [Job.State.DISPATCHING],
                    Job.State.QUEUED,
                    node=None,
                    dispatched_at=None,
                    log_url="",
                    not_before=result.at + REFUSAL_DELAY,
                    reason=f"refused by {node.name}: {result.error}"[:2000],
                    avoid_nodes=sorted({*(job.avoid_nodes or []), node.pk}),
                )
        else:
            # The node may or may not have queued it; the poller reconciles by job id.
            logger.warning(
                "dispatch of job %s to %s is unconfirmed: %s", job.pk, node.name, result.error
            )
    if accepted:
        # The poller may have seen the job on its node first and moved it on: only DISPATCHING.
        with WRITE_LOCK, transaction.atomic():
            update_each(
                ["state", "dispatched_at", "updated_at"],
                [(Job.State.PENDING, j.dispatched_at, j.updated_at, j.pk) for j in accepted],
                only_in=Job.State.DISPATCHING,
            )
            observe_fire_to_dispatch(accepted)


def observe_fire_to_dispatch(jobs: list[Job]) -> None:
    """Fire-to-dispatch latency of first attempts, by trigger (retries wait out a backoff on
    purpose). Recorded where the acceptance is, in its transaction: once per dispatched job."""
    latencies: dict[str, list[float]] = defaultdict(list)
    for job in jobs:
        if job.attempt == 1 and job.dispatched_at is not None:
            fired = job.run.scheduled_for
            latencies[job.run.trigger].append((job.dispatched_at - fired).total_seconds())
    for trigger, values in sorted(latencies.items()):
        FIRE_TO_DISPATCH.observe_many(values, trigger=trigger)


def _due_groups(placements: list[Placement]) -> list[tuple[float, list[Placement]]]:
    """The placements by when each may be sent (its job's ``not_before``, as a Unix time; 0 for
    now), soonest first: jobs planned ahead of their fire wait for it."""
    groups: dict[float, list[Placement]] = defaultdict(list)
    for placement in placements:
        not_before = placement.job.not_before
        groups[not_before.timestamp() if not_before is not None else 0.0].append(placement)
    return sorted(groups.items(), key=lambda item: item[0])


def _submit_at(
    pool: ThreadPoolExecutor,
    due: float,
    sender: Callable[[list[Placement]], list[SendResult]],
    placements: list[Placement],
) -> Future[list[SendResult]]:
    """``sender(placements)`` on the pool at Unix time ``due``; a timer holds it until then, so
    held sends never occupy a sender thread that due ones could use."""
    delay = due - time.time()
    if delay <= 0:
        return pool.submit(sender, placements)
    held: Future[list[SendResult]] = Future()

    def release() -> None:
        sent = pool.submit(sender, placements)
        sent.add_done_callback(lambda done: _settle(held, done))

    timer = threading.Timer(delay, release)
    timer.daemon = True
    timer.start()
    return held


def _settle(held: Future[list[SendResult]], done: Future[list[SendResult]]) -> None:
    error = done.exception()
    if error is not None:
        held.set_exception(error)
    else:
        held.set_result(done.result())


class Sends:
    """Sends in flight, and the recording of their outcomes, for callers that go on planning.

    ``submit`` (from any thread) hands a planned batch to the sender threads and returns at once;
    ``record_answered`` (from one thread) writes the outcomes of every (batch, node) group whose
    sends are all answered, one batch per group; sender threads never touch the database.
    ``on_answer`` is called on a sender thread after each answer, to wake the recording thread.
    A job planned before its ``not_before`` (a fire recorded ahead) is held until then.
    """

    def __init__(self, on_answer: Callable[[], None] | None = None) -> None:
        self.on_answer = on_answer
        self._lock = threading.Lock()
        self._batches = 0
        self._groups: dict[tuple[int, int], list[Future[list[SendResult]]]] = {}
        self._pending = 0
        # Since the senders were last idle: when the first of these jobs was handed over, and
        # how many were sent and accepted (for one log line per burst).
        self._since = 0.0
        self._sent = self._accepted = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, placements: list[Placement]) -> None:
        pool = _send_pool()
        by_node: dict[int, list[Placement]] = defaultdict(list)
        for placement in placements:
            by_node[placement.node.pk].append(placement)
        size = min(django_settings.CRAWLFLEET_DISPATCH_BATCH, MAX_BATCH)
        with self._lock:
            self._batches += 1
            if not self._pending:
                self._since, self._sent, self._accepted = time.monotonic(), 0, 0
            self._pending += len(placements)
            self._sent += len(placements)
            for node_pk, group in by_node.items():
                futures = self._groups.setdefault((self._batches, node_pk), [])
                for due, part in _due_groups(group):
                    if size > 1 and BATCH_SUPPORT.worth_trying(part[0].node.url):
                        calls = [
                            (send_batch, part[i : i + size]) for i in range(0, len(part), size)
                        ]
                    else:
                        calls = [(send_one, [placement]) for placement in part]
                    for sender, jobs in calls:
                        future = _submit_at(pool, due, sender, jobs)
                        if self.on_answer is not None:
                            future.add_done_callback(lambda _: self.on_answer())
                        futures.append(future)

    def record_answered(self) -> int:
        """Record each fully answered group; returns how many jobs the nodes accepted."""
        with self._lock:
            ready = [k for k, futures in self._groups.items() if all(f.done() for f in futures)]
            groups = [(key, self._groups.pop(key)) for key in ready]
        accepted = answered = 0
        for key, futures in groups:
            results = [result for future in futures for result in future.result()]
            answered += len(results)
            accepted += sum(r.outcome == "accepted" for r in results)
            try:
                record(results)
            except Exception:
                # The jobs stay dispatching; the poller finds them on the node (or not).
                logger.exception("could not record dispatch outcomes for node %s", key[1])
        with self._lock:
            self._pending -= answered
            self._accepted += accepted
            if groups and not self._pending:
                logger.info(
                    "dispatched %d job(s), %d accepted, all answered %.0f ms after the first "
                    "was handed to the senders",
                    self._sent,
                    self._accepted,
                    (time.monotonic() - self._since) * 1000,
                )
        return accepted


def send_all(placements: list[Placement]) -> int:
    """Send concurrently; record each node's outcomes as soon as that node has answered all."""
    if not placements:
        return 0
    answered = threading.Event()
    sends = Sends(on_answer=answered.set)
    sends.submit(placements)
    accepted = 0
    while sends.pending:
        answered.wait()
        answered.clear()
        accepted += sends.record_answered()
    return accepted


def dispatch(limit: int = 1000) -> int:
    """Plan and send; returns how many jobs the nodes accepted."""
    if not connection.in_atomic_block:  # a caller's transaction (a test's) keeps its connection
        close_old_connections()
    return send_all(plan(limit))
