"""Job tracking: what a node says about its jobs, folded into their rows.

Each poll of a node is ``daemonstatus.json`` (health) and ``listjobs.json``, with the jobs we
believe are on it read from the database before ``listjobs.json`` (the poller reads those of
every node in one query before the round, :mod:`controlplane.jobs.onnode`), so a job dispatched
in between is never mistaken for one the node forgot. Each job is moved along
(``dispatching → pending → running → final``) and ended jobs are classified
(:mod:`controlplane.jobs.outcome`).

Several pollers may run. Every change is a conditional :meth:`Job.transition` (or an equally
conditional update), and only the poller whose update changed the row acts on it: it sends the
cancel, schedules the retry. See docs/FAILURES.md for the rules.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.deploys.sync import sync_node
from controlplane.jobs import outcome, retry, stalls, verdicts
from controlplane.jobs.jobevents import raise_breaches, raise_job_events
from controlplane.jobs.models import Job
from controlplane.jobs.nodeview import Listing, NodeSession, parse_node_time
from controlplane.jobs.onnode import on_node_jobs
from controlplane.lib.scrapyd import ScrapydError
from controlplane.nodes import health
from controlplane.nodes.clients import NodeClients
from controlplane.nodes.models import Node

logger = logging.getLogger(__name__)


def cancel_kill_after() -> float:
    """Seconds a job we asked to stop may take to shut down gracefully before it is killed."""
    return settings.CRAWLFLEET_CANCEL_KILL_AFTER


def bring_up_to_date(node: Node) -> bool:
    """Deploy the current versions to a node that (re)joined, so it never refuses a job for a
    missing egg. A failure is logged and tried again the next time the node comes back; the
    dispatcher only sends a node versions it holds, so nothing breaks meanwhile."""
    try:
        sync_node(node)
    except Exception:
        logger.exception("could not bring node %s up to date", node.name)
        return False
    return True


class Tracker:
    """Reconciles the jobs of one node with what the node says. Shared by the poll threads."""

    def __init__(self) -> None:
        # Jobs we asked to stop: job id -> (monotonic time first seen stopping, killed yet).
        self._stopping: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self.clients = NodeClients()  # one kept-alive client per node, across rounds

    # --- one node --------------------------------------------------------------------------
    def poll_node(self, node: Node, jobs: list[Job] | None = None) -> health.HealthCheck:
        """``jobs``: the node's on-node jobs read this round before any call to the node
        (:mod:`controlplane.jobs.onnode`); None reads them here, before ``listjobs.json``."""
        client = self.clients.get(node)
        check = health.check(node, client)
        if not check.ok:
            if node.down_longer_than(settings.CRAWLFLEET_NODE_LOST_GRACE):
                self.node_lost(node)
            return check
        if check.came_back:
            bring_up_to_date(node)
        now = timezone.now()
        if jobs is None:
            jobs = on_node_jobs([node.pk])
        try:
            listing = Listing.from_api(client.listjobs())
        except ScrapydError as exc:
            logger.warning("listjobs.json of %s failed: %s", node.name, exc)
            return check
        session = NodeSession(node, client)
        for job in jobs:
            try:
                self.reconcile(job, listing, session, now)
            except ScrapydError as exc:
                logger.warning("job %s on %s: %s", job.pk, node.name, exc)
        self.stop_strays(node, listing, session, {job.scrapyd_job_id for job in jobs})
        return check

    def reconcile(self, job: Job, listing: Listing, session: NodeSession, now: datetime) -> None:
        where, entry = listing.where(job.scrapyd_job_id)
        if where == "finished":
            self.finalize(job, session, entry)
        elif where == "running":
            if job.state != Job.State.RUNNING:
                started = job.started_at or parse_node_time(entry.get("start_time")) or now
                job.transition(
                    [Job.State.DISPATCHING, Job.State.PENDING],
                    Job.State.RUNNING,
                    started_at=started,
                    pid=entry.get("pid") if isinstance(entry.get("pid"), int) else None,
                )
            if job.state == Job.State.RUNNING:
                self.watch_running(job, session, entry, now)
        elif where == "pending":
            if job.state == Job.State.DISPATCHING:
                job.transition(
                    [Job.State.DISPATCHING], Job.State.PENDING, log_url=job.log_url_on(job.node)
                )
            if job.cancel_requested:
                self.send_cancel(job, session, signal=None)
        else:
            self.gone(job, session, now)

    def watch_running(
        self, job: Job, session: NodeSession, entry: dict[str, Any], now: datetime
    ) -> None:
        """Stop a running job that overran max_runtime or stopped heartbeating."""
        if job.cancel_requested:
            self.escalate(job, session)
            return
        policy = retry.policy_for(job)
        started = job.started_at or parse_node_time(entry.get("start_time"))
        if policy.max_runtime and started and now - started > timedelta(seconds=policy.max_runtime):
            self.request_stop(job, session, f"{outcome.CANCEL_TIMEOUT} ({policy.max_runtime} s)")
            return
        timeout = settings.CRAWLFLEET_HEARTBEAT_TIMEOUT
        if job.last_heartbeat and now - job.last_heartbeat > timedelta(seconds=timeout):
            # The round's row may predate a heartbeat (jobs.onnode): decide on the current one.
            job.refresh_from_db(fields=["last_heartbeat", "items", "pages"])
        if job.last_heartbeat and now - job.last_heartbeat > timedelta(seconds=timeout):
            age = int((now - job.last_heartbeat).total_seconds())
            self.request_stop(
                job, session, f"{outcome.CANCEL_HUNG} for {age} s (limit {timeout:g} s)"
            )
            return
        stall = stalls.find_stall(job, now)
        if stall is not None:  # confirmed on the current row, as above
            job.refresh_from_db(fields=["last_heartbeat", "items", "pages"])
            stall = stalls.find_stall(job, now)
        if stall is not None:
            self.request_stop(
                job,
                session,
                f"{outcome.CANCEL_STALLED}: {stall.message}",
                monitor_report=stall.report(job),
            )

    def request_stop(
        self, job: Job, session: NodeSession, reason: str, monitor_report: dict | None = None
    ) -> None:
        """Mark the job as being stopped by us; only the poller that marks it sends the cancel.

        A stop asked for by a monitor (a stall) records its breach and raises it as an event in
        the same transaction."""
        fields: dict[str, Any] = {"cancel_requested": True, "reason": reason[:2000]}
        if monitor_report is not None:
            fields["monitor_report"] = monitor_report
        with transaction.atomic():
            won = (
                Job.objects.filter(
                    pk=job.pk, state=Job.State.RUNNING, cancel_requested=False
                ).update(updated_at=timezone.now(), **fields)
                == 1
            )
            if won and monitor_report is not None:
                job.monitor_report = monitor_report
                raise_breaches(job)
        if won:
            job.cancel_requested, job.reason = True, reason
            logger.warning("stopping job %s on %s: %s", job.pk, session.node.name, reason)
            self.send_cancel(job, session, signal=None)

    def send_cancel(self, job: Job, session: NodeSession, signal: str | None) -> str | None:
        prevstate = session.client.cancel(job.project.name, job.scrapyd_job_id, signal=signal)
        with self._lock:
            self._stopping.setdefault(job.scrapyd_job_id, (time.monotonic(), signal == "KILL"))
        if prevstate == "pending" and job.cancel_requested:
            # Taken out of the node's queue: it never ran.
            self.end(
                job,
                *self._cancel_state(job),
                f"{job.reason}; removed from {session.node.name}'s queue",
                from_states=[Job.State.DISPATCHING, Job.State.PENDING],
            )
        return prevstate

    def escalate(self, job: Job, session: NodeSession) -> None:
        """A job asked to stop that is still running after the grace period is killed."""
        key = job.scrapyd_job_id
        with self._lock:
            first, killed = self._stopping.setdefault(key, (time.monotonic(), False))
            due = not killed and time.monotonic() - first > cancel_kill_after()
            if due:
                self._stopping[key] = (first, True)
        if due:
            logger.warning(
                "job %s did not stop gracefully on %s: killing it", job.pk, session.node.name
            )
            session.client.cancel(job.project.name, key, signal="KILL")

    @staticmethod
    def _cancel_state(job: Job) -> tuple[str, str]:
        """(state, cause) for a job we asked to stop that ended without a verdict of its own."""
        return verdicts.stopped_state(job)

    def gone(self, job: Job, session: NodeSession, now: datetime) -> None:
        """The node answers but does not list the job."""
        job.refresh_from_db()
        if job.state not in Job.ON_NODE or job.node_id != session.node.pk:
            return
        if job.state == Job.State.DISPATCHING:
            self.never_arrived(job, session, now)
            return
        record = session.exit_record(job.scrapyd_job_id)
        if record and record.get("state") == "running":
            return  # started by the Scrapyd that answers: listed again next time
        if record and record.get("state") in ("exited", "killed"):
            # It ended, but the node's finished list no longer has it (trimmed or restarted).
            self.finalize(job, session, {"end_time": record.get("end_time")})
            return
        if job.cancel_requested:
            # We asked it to stop; whatever became of it, it is not retried as lost.
            self.end(job, *self._cancel_state(job), f"{job.reason}; gone from {session.node.name}")
            return
        detail = f"{session.node.name} no longer knows it (its Scrapyd restarted?)"
        if record and record.get("pid_alive"):
            detail += f"; its process {record.get('pid')} is still running"
        self.lose(job, detail)

    def never_arrived(self, job: Job, session: NodeSession, now: datetime) -> None:
        """A dispatching job the node does not know: cancelled, or queued again after the grace."""
        if job.cancel_requested:
            self.end(job, *self._cancel_state(job), f"{job.reason}; before it reached a node")
            return
        grace = timedelta(seconds=settings.CRAWLFLEET_DISPATCH_GRACE)
        if job.dispatched_at is None or now - job.dispatched_at <= grace:
            return  # schedule.json may still be on its way
        # The node never got it (schedule.json failed in transit): it never ran.
        if job.transition(
            [Job.State.DISPATCHING],
            Job.State.QUEUED,
            node=None,
            dispatched_at=None,
            reason=f"{session.node.name} never received it; queued again",
            avoid_nodes=sorted({*(job.avoid_nodes or []), session.node.pk}),
        ):
            logger.warning("job %s never reached %s: queued again", job.pk, session.node.name)

    def finalize(self, job: Job, session: NodeSession, entry: dict[str, Any]) -> None:
        """Classify a job the node says has ended (:mod:`controlplane.jobs.verdicts`), record it."""
        job.refresh_from_db()
        if job.state not in Job.ON_NODE:
            return
        verdict = verdicts.decide(job, session, entry)
        cause = verdict.fields.pop("cause", "")
        self.end(job, verdict.state, cause, verdict.reason, **verdict.fields)

    # --- ending jobs -----------------------------------------------------------------------
    def end(
        self,
        job: Job,
        state: str,
        cause: str,
        reason: str,
        from_states: list[str] | None = None,
        **fields: Any,
    ) -> bool:
        """Move an on-node job to a final state; the winner raises its events and schedules
        the retry. The transition and its events are committed together."""
        with transaction.atomic():
            won = job.transition(
                from_states or Job.ON_NODE, state, reason=reason[:2000], cause=cause, **fields
            )
            if won:
                raise_job_events(job)
        if not won:
            return False
        with self._lock:
            self._stopping.pop(job.scrapyd_job_id, None)
        log = logger.info if state == Job.State.SUCCEEDED else logger.warning
        log("job %s (%s, attempt %s) %s: %s", job.pk, job.spider, job.attempt, state, reason)
        if state in Job.RETRYABLE:
            retry.maybe_retry(job)
        return True

    def lose(self, job: Job, reason: str) -> bool:
        return self.end(job, Job.State.LOST, "lost", reason)

    def node_lost(self, node: Node) -> None:
        """Every job on a node that has been down past the grace period is lost."""
        reason = f"node {node.name} down since {node.state_since:%Y-%m-%d %H:%M:%S} UTC"
        for job in Job.objects.filter(node=node, state__in=Job.ON_NODE).select_related("run__task"):
            if job.cancel_requested:
                self.end(job, *self._cancel_state(job), f"{job.reason}; {reason}")
            else:
                self.lose(job, reason)

    def stop_strays(
        self, node: Node, listing: Listing, session: NodeSession, expected: set[str]
    ) -> None:
        """Stop processes of ours the node runs that we no longer expect there.

        A job declared lost while its node was unreachable, then found still running when the
        node answers again; a job re-queued after an unconfirmed dispatch that reached the node
        late. Jobs scheduled on the node by others are left alone.
        """
        listed = {**listing.pending, **listing.running}
        unexpected = [job_id for job_id in listed if job_id not in expected]
        if not unexpected:
            return
        for job in Job.objects.filter(scrapyd_job_id__in=unexpected).select_related("project"):
            if job.state in Job.ON_NODE and job.node_id == node.pk:
                continue  # dispatched after we read the database: not a stray
            key = job.scrapyd_job_id
            with self._lock:
                first, killed = self._stopping.get(key, (None, False))
                if first is None:
                    self._stopping[key] = (time.monotonic(), False)
                    signal = "INT"
                elif not killed and time.monotonic() - first > cancel_kill_after():
                    self._stopping[key] = (first, True)
                    signal = "KILL"
                else:
                    continue
            logger.warning(
                "job %s (%s) still runs on %s: stopping it (%s)",
                job.pk,
                job.state,
                node.name,
                signal,
            )
            try:
                session.client.cancel(
                    listed[key].get("project") or job.project.name, key, signal=signal
                )
            except ScrapydError as exc:
                logger.warning("could not stop stray job %s on %s: %s", job.pk, node.name, exc)

    def forget_stale(self) -> None:
        """Drop stop bookkeeping old enough that the job has surely been killed and gone."""
        horizon = time.monotonic() - max(600.0, 5 * cancel_kill_after())
        with self._lock:
            for key in [k for k, (first, _) in self._stopping.items() if first < horizon]:
                del self._stopping[key]


def nodes_to_poll() -> list[Node]:
    """Enabled nodes, and disabled ones that still have jobs to follow to their end."""
    return list(
        Node.objects.filter(Q(enabled=True) | Q(jobs__state__in=Job.ON_NODE))
        .distinct()
        .order_by("pk")
    )


def sweep_orphaned_rows() -> int:
    """On-node jobs whose node row was deleted can never be reconciled: they are lost."""
    count = 0
    for job in Job.objects.filter(node__isnull=True, state__in=Job.ON_NODE).select_related(
        "run__task"
    ):
        with transaction.atomic():
            won = job.transition(
                Job.ON_NODE, Job.State.LOST, reason="its node was removed", cause="lost"
            )
            if won:
                raise_job_events(job)
        if won:
            retry.maybe_retry(job)
            count += 1
    return count
