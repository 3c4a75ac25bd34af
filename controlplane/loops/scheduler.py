"""The scheduler process: cron fires become TaskRuns exactly once, and queued jobs go to nodes.

Each task's next fire is computed from its own trigger (APScheduler's cron arithmetic, made
wall-clock aware in :mod:`controlplane.scheduling.cron`), and the process sleeps until the
earliest of them, so it wakes at the fire time itself rather than on a polling tick. One timer
for all tasks, not one timer job per task: a burst of hundreds of tasks due at the same second
is one wake-up, not hundreds of timer callbacks competing with the fire for the interpreter.
The timer only decides *when*; what a wake-up does is decided from the database, so replicas and
restarts agree:

* Each task has a bookmark, ``fired_through``: every fire at or before it has been handled. On
  every wake-up (and every sync, as a safety net) the fires in ``(fired_through, now]`` of each due
  task are recorded in one transaction (:func:`~controlplane.loops.firerecording.record_chunk`): the
  unique (task, scheduled_for) constraint makes a racing replica's insert fail, so a fire is
  recorded once. The bookmark then moves with a conditional update (``WHERE fired_through = old``).
* Fires are recorded ``CRAWLFLEET_FIRE_LEAD`` seconds ahead; their jobs are planned as soon as
  they are recorded and held by the senders until the fire time (``Job.not_before``), so a burst
  of hundreds of fires reaches its nodes at the fire time rather than after its recording. A
  burst too big to record within that lead, at the pace this process last recorded one, is
  started earlier (:func:`~controlplane.loops.firerecording.lead_for`, at most 30 s ahead).
* A fire later than the task's ``misfire_grace`` is recorded as missed. After an outage only the
  newest few fires within the grace run; older ones are recorded as missed, at most a bounded
  number per task (:mod:`controlplane.scheduling.fireplan`), so a per-second task down for a week costs nothing.
* A sync every ``CRAWLFLEET_SCHEDULER_SYNC`` seconds reloads the task table (compared by ``updated_at``)
  and adds, reschedules or removes tasks. A task enabled again, or given a new cron or
  timezone, starts counting from that change, not from its old bookmark. A task without a cron
  (it only runs after another task: :mod:`controlplane.jobs.chains`) has no next fire.

Dispatching runs on its own thread: right after runs are created, and every
``CRAWLFLEET_SCHEDULER_TICK`` seconds for jobs still queued (retries, a full fleet, overlap). Claims
are conditional updates, so replicas never send a job twice.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from controlplane.jobs import dispatch as dispatcher
from controlplane.jobs import placement
from controlplane.loops.firerecording import (
    FIRST_SECONDS_PER_FIRE,
    MAX_LEAD,
    later,
    lead_for,
    record_chunk,
)
from controlplane.scheduling import cron
from controlplane.scheduling.fireplan import FirePlan, TaskSchedule
from controlplane.scheduling.models import Task, TaskRun

logger = logging.getLogger(__name__)

# Jobs claimed per planning transaction.
DISPATCH_BATCH = 500
# Tasks whose fires are recorded per transaction: short write transactions keep other processes
# (web, poller, other replicas) from waiting long for the SQLite write lock.
FIRE_CHUNK = 100
# A smaller first chunk, so the first jobs of a burst go out while the rest are being recorded.
FIRST_FIRE_CHUNK = 25

_T = TypeVar("_T")


class Scheduler:
    """One scheduler replica. ``run()`` blocks until ``stop()`` (called by a signal handler)."""

    def __init__(
        self,
        *,
        tick: float | None = None,
        sync_interval: float | None = None,
        dispatch_jobs: bool = True,
        name: str = "",
    ) -> None:
        self.tick = tick if tick is not None else settings.CRAWLFLEET_SCHEDULER_TICK
        self.lead = settings.CRAWLFLEET_FIRE_LEAD  # the least lead; bursts get more (lead_now)
        self.seconds_per_fire = FIRST_SECONDS_PER_FIRE  # as this process last recorded a burst
        self.sync_interval = (
            settings.CRAWLFLEET_SCHEDULER_SYNC if sync_interval is None else sync_interval
        )
        self.dispatch_jobs = dispatch_jobs
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.schedules: dict[int, TaskSchedule] = {}
        self.counters: Counter[str] = Counter()
        self._wake = threading.Event()
        self._sync_due = threading.Event()
        self._dispatch_due = threading.Event()  # jobs may be due: plan
        self._dispatch_wake = threading.Event()  # that, or a send was answered
        self._sends = dispatcher.Sends(on_answer=self._dispatch_wake.set)
        self._next_tick = 0.0
        self._whole_burst = threading.Event()  # a burst is being recorded, to be planned whole
        # Runs were recorded here since the dispatcher last planned: a stop must not leave them
        # queued until another replica's tick, so shutdown plans once more.
        self._unplanned_fire = False
        self._stopping = threading.Event()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="dispatcher", daemon=True
        )
        self._failures: Counter[str] = Counter()
        self._invalid_logged: dict[int, str] = {}

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        logger.info(
            "scheduler %s starting (tick %.2fs, sync %.2fs)",
            self.name,
            self.tick,
            self.sync_interval,
        )
        # Start-up's long-lived objects (modules, Django's caches) out of the cyclic collector's
        # sight: the collections a burst's many new rows set off then scan only those rows.
        gc.freeze()
        if self.dispatch_jobs:
            self._dispatcher.start()
        next_sync = time.monotonic()
        try:
            while not self._stopping.is_set():
                if self._sync_due.is_set() or time.monotonic() >= next_sync:
                    self._sync_due.clear()
                    next_sync = time.monotonic() + self.sync_interval
                    self._guarded("sync", self.sync)
                self._guarded("fire", self.fire_due)
                self._wake.wait(timeout=self._sleep(next_sync))
                self._wake.clear()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loops to end; safe to call from a signal handler."""
        self._stopping.set()
        self._wake.set()
        self._dispatch_due.set()
        self._dispatch_wake.set()

    def _sleep(self, next_sync: float) -> float:
        """Seconds until the next sync or the earliest next fire of any task, less the lead."""
        now = timezone.now()
        fires = [s.next_fire for s in self.schedules.values() if s.next_fire is not None]
        if not fires:
            return max(0.0, next_sync - time.monotonic())
        until_fire = (min(fires) - now).total_seconds() - self.lead_now(now)
        return max(0.0, min(next_sync - time.monotonic(), until_fire))

    def lead_now(self, now: datetime) -> float:
        """The lead for the fires coming up: ``CRAWLFLEET_FIRE_LEAD``, or more when the tasks due
        in the next 30 s would take longer than that to record."""
        if self.lead <= 0:
            return 0.0
        window = now + timedelta(seconds=MAX_LEAD)
        upcoming = [
            (s.next_fire - now).total_seconds()
            for s in self.schedules.values()
            if s.next_fire is not None and s.next_fire <= window
        ]
        return lead_for(upcoming, self.seconds_per_fire, self.lead)

    def _shutdown(self) -> None:
        if self._dispatcher.is_alive():
            # A dispatch in progress finishes: its sends are bounded by the node timeout.
            self._dispatcher.join(timeout=settings.CRAWLFLEET_NODE_TIMEOUT * 2 + 5)
        if not self._dispatcher.is_alive():
            if self._unplanned_fire and self.dispatch_jobs:
                self._guarded("dispatch", self._plan_and_send)  # the fire a stop cut short
            self._drain()  # sends the fire handed over after the dispatcher's own drain
        connections.close_all()
        logger.info(
            "scheduler %s stopped: %d run(s) created, %d fire(s) missed, %d job(s) dispatched",
            self.name,
            self.counters["runs"],
            self.counters["missed"],
            self.counters["dispatched"],
        )

    # --- work units --------------------------------------------------------------------------
    def _guarded(self, what: str, work: Callable[[], _T]) -> _T | None:
        """Run one unit of work; a database error is logged and retried later, never fatal."""
        close_old_connections()
        try:
            result = work()
        except DatabaseError as exc:
            self._failures[what] += 1
            failures = self._failures[what]
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy:
                # The connection may be broken (a restarted PostgreSQL): reconnect next time.
                connections.close_all()
            delay = min(5.0, 0.1 * 2 ** min(failures, 6)) if busy else min(10.0, 2.0**failures)
            log = logger.info if busy and failures < 5 else logger.warning
            log("%s failed (%s, attempt %d); retrying in %.1fs", what, exc, failures, delay)
            if what == "fire":
                self._sync_due.set()  # the database may have changed meanwhile
            self._stopping.wait(delay)
            self._wake.set()
            return None
        except Exception:
            logger.exception("%s failed; carrying on", what)
            self._stopping.wait(1.0)
            return None
        self._failures[what] = 0
        return result

    # --- the task table --------------------------------------------------------------------------
    def sync(self) -> None:
        """Reload the task table: new, changed and removed tasks; fresher bookmarks."""
        rows = Task.objects.values_list(
            "pk", "name", "cron", "timezone", "enabled", "updated_at", "created_at", "fired_through"
        )
        seen: set[int] = set()
        for pk, name, expression, tz, enabled, updated_at, created_at, fired_through in rows:
            seen.add(pk)
            known = self.schedules.get(pk)
            if known is not None and known.updated_at == updated_at:
                known.fired_through = later(known.fired_through, fired_through)
                known.refresh_next_fire()
                continue
            schedule = TaskSchedule(
                pk, name, expression, tz, enabled, updated_at, created_at, fired_through, None
            )
            schedule.trigger = self._trigger(schedule)
            if known is not None:
                schedule.fired_through = later(known.fired_through, fired_through)
                schedule.floor = known.floor
                if enabled and known.schedule_changed(schedule):
                    # Enabled again or rescheduled: fires before the change are not owed.
                    schedule.floor = later(known.floor, updated_at)
            schedule.refresh_next_fire()
            self.schedules[pk] = schedule
        for pk in set(self.schedules) - seen:
            del self.schedules[pk]

    def _trigger(self, schedule: TaskSchedule) -> cron.WallClockCronTrigger | None:
        if not schedule.cron:  # a chained-only task: it runs after another task, never by itself
            self._invalid_logged.pop(schedule.task_id, None)
            return None
        try:
            trigger = cron.parse(schedule.cron, schedule.timezone)
        except ValidationError as exc:
            message = "; ".join(exc.messages)
            if self._invalid_logged.get(schedule.task_id) != message:
                logger.error("task %s is not scheduled: %s", schedule.name, message)
                self._invalid_logged[schedule.task_id] = message
            return None
        self._invalid_logged.pop(schedule.task_id, None)
        return trigger

    # --- fires -----------------------------------------------------------------------------------
    def fire_due(self, now: datetime | None = None) -> int:
        """Record the due fires of every task, and those due within the lead; returns how many
        runs were created."""
        now = now or timezone.now()
        horizon = now + timedelta(seconds=self.lead_now(now))
        due = [
            s for s in self.schedules.values() if s.next_fire is not None and s.next_fire <= horizon
        ]
        if not due:
            return 0
        started = time.monotonic()
        due.sort(key=lambda s: (s.next_fire, s.task_id))
        created: list[TaskRun] = []
        plans: list[FirePlan] = []
        # Each chunk is planned once recorded only if the fleet has a slot for every due task.
        # When they compete for slots, one planning pass weighs the whole burst (priorities, fair
        # shares: docs/QUEUE.md) rather than giving the slots to the first chunks.
        early = self.dispatch_jobs and placement.free_slots() >= len(due)
        if not early:
            self._whole_burst.set()  # the dispatcher's tick waits for the rest of it too
        # Tasks sharing a schedule share their next fire: each is computed once per wake-up.
        following: dict[tuple[str, str, datetime], datetime | None] = {}
        offset, size = 0, FIRST_FIRE_CHUNK
        try:
            while offset < len(due):
                chunk = due[offset : offset + size]
                offset, size = offset + size, FIRE_CHUNK
                done, chunk_plans = record_chunk(
                    self.schedules, sorted(s.task_id for s in chunk), now, following, horizon
                )
                created += done
                plans += chunk_plans
                if done:
                    self._unplanned_fire = True
                if done and early and not self._stopping.is_set():
                    self._plan_now()
        finally:
            self._whole_burst.clear()
        if created and self.dispatch_jobs and not early:
            self._dispatch_due.set()
            self._dispatch_wake.set()
        for schedule in due:
            schedule.refresh_next_fire()
        if len(created) >= 50:  # enough fires to time the next burst's lead by
            self._timed_burst((time.monotonic() - started) / len(created))
        runs = sum(len(p.to_run) for p in plans)
        missed = sum(len(p.missed) for p in plans)
        self.counters["runs"] += len(created)
        self.counters["missed"] += missed
        if created or missed:
            logger.info(
                "fired %d task(s): %d run(s) created, %d fire(s) missed (%.0f ms)",
                len(plans),
                len(created),
                missed,
                (time.monotonic() - started) * 1000,
            )
        elif runs:
            logger.debug("%d fire(s) already recorded by another scheduler", runs)
        return len(created)

    def _timed_burst(self, seconds_per_fire: float) -> None:
        """Fold a burst's recording pace into the estimate: a slower pace counts at once, a
        faster one only halfway, as the same burst may record slower next time (a bigger
        table, a busier machine)."""
        self.seconds_per_fire = max(
            seconds_per_fire, (self.seconds_per_fire + seconds_per_fire) / 2
        )

    # --- dispatch --------------------------------------------------------------------------------
    def _plan_now(self) -> None:
        """Plan the jobs a chunk of fires just made due, on the fire's thread, before the next
        chunk is recorded: the first jobs of a burst leave while the rest are being recorded."""
        try:
            planned = self._plan_and_send()
        except DatabaseError as exc:
            logger.info("planning after a fire failed (%s); the dispatcher plans again", exc)
            planned = DISPATCH_BATCH
        if planned == DISPATCH_BATCH:  # more may be due: the dispatcher carries on
            self._dispatch_due.set()
            self._dispatch_wake.set()

    def _dispatch_loop(self) -> None:
        """Record the nodes' answers as they come; plan when jobs may be due, and every tick."""
        while not self._stopping.is_set():
            self._guarded("dispatch", self.dispatch_step)
            if self._dispatch_due.is_set():
                continue
            self._dispatch_wake.wait(timeout=max(0.0, self._next_tick - time.monotonic()))
            self._dispatch_wake.clear()
        self._drain()
        connections.close_all()

    def _drain(self) -> None:
        """Stopping: the sends in flight finish (bounded by the node timeout) and are recorded."""
        while self._sends.pending:
            self._dispatch_wake.wait(timeout=self.tick)
            self._dispatch_wake.clear()
            self._guarded("dispatch", self.dispatch_step)

    def dispatch_step(self) -> int:
        """Record answered sends, and plan if jobs may be due or a tick has passed; returns how
        many jobs nodes accepted."""
        accepted = self._sends.record_answered()
        self.counters["dispatched"] += accepted
        if self._stopping.is_set() or self._whole_burst.is_set():
            return accepted
        if self._dispatch_due.is_set() or time.monotonic() >= self._next_tick:
            self._dispatch_due.clear()
            self._next_tick = time.monotonic() + self.tick
            self._unplanned_fire = False
            if self._plan_and_send() == DISPATCH_BATCH:
                self._dispatch_due.set()
        return accepted

    def _plan_and_send(self) -> int:
        """One planning pass, its jobs handed to the senders; how many were planned."""
        started = time.monotonic()
        placements = placement.plan(DISPATCH_BATCH)
        if placements:
            self._sends.submit(placements)
            logger.debug(
                "planned %d job(s) in %.0f ms", len(placements), (time.monotonic() - started) * 1000
            )
        return len(placements)
