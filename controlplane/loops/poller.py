"""The poller loop: every node polled concurrently, then the fleet-wide sweeps.

Every cycle each node is polled (:class:`controlplane.jobs.tracking.Tracker`) in its own worker
thread. A cycle waits at most one interval for the nodes: a node that is slow or dead keeps its
own thread busy until its bounded timeouts expire and is skipped by the following cycles until
then, so it never delays the others. After the nodes come the sweeps: jobs whose node row is gone,
due retries, and runs whose last attempt ended.

A round reads the on-node jobs of every node in one query before polling them
(:mod:`controlplane.jobs.onnode`), and each node keeps one client, and its connection, across
rounds (:mod:`controlplane.nodes.clients`).

Replicas split the nodes between them (:mod:`controlplane.loops.shards`), so a round's cost is
divided among them; the sweeps stay fleet-wide in every replica, as each of their steps is a
conditional update. A one-off cycle (``runpoller --once``) polls every node.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections

from controlplane.jobs import completion, retry
from controlplane.jobs.onnode import RoundJobs
from controlplane.jobs.tracking import Tracker, nodes_to_poll, sweep_orphaned_rows
from controlplane.loops.shards import Membership
from controlplane.nodes.models import Node
from controlplane.telemetry.histograms import POLL_CYCLE

logger = logging.getLogger(__name__)


@dataclass
class CycleResult:
    polled: list[str] = field(default_factory=list)
    still_running: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)  # the live ones this cycle split among
    duration: float = 0.0


class Poller:
    """Runs cycles: nodes concurrently, then the fleet-wide sweeps (retries, run completion)."""

    def __init__(
        self,
        interval: float | None = None,
        workers: int | None = None,
        shard: bool = True,
        name: str | None = None,
    ) -> None:
        self.interval = interval or settings.CRAWLFLEET_POLL_INTERVAL
        # Without a share, this poller polls every node (a one-off cycle, or a lone poller).
        timeout = settings.CRAWLFLEET_POLL_REPLICA_TIMEOUT or 3 * self.interval
        if shard and timeout <= self.interval:
            raise ValueError(
                f"CRAWLFLEET_POLL_REPLICA_TIMEOUT ({timeout:g} s) must be longer than the poll "
                f"interval ({self.interval:g} s), or every replica would expire between cycles"
            )
        self.membership = Membership(timeout, name) if shard else None
        self.tracker = Tracker()
        self.pool = ThreadPoolExecutor(
            max_workers=workers or settings.CRAWLFLEET_POLL_WORKERS, thread_name_prefix="poll"
        )
        self.inflight: dict[int, tuple[str, Future[Any]]] = {}
        self.cycles = 0

    def _poll(self, node: Node, round_jobs: RoundJobs) -> None:
        try:
            self.tracker.poll_node(node, round_jobs.for_node(node.pk, max_age=self.interval))
        except Exception:
            logger.exception("polling node %s failed", node.name)
        finally:
            connections.close_all()

    def cycle(self, wait: float | None = None) -> CycleResult:
        """Poll every node of this replica's share once (nodes still busy from an earlier cycle
        are skipped), waiting at most ``wait`` seconds (default: one interval) for them, then run
        the sweeps."""
        started = time.monotonic()
        close_old_connections()
        result = CycleResult()
        submitted: dict[Future[Any], str] = {}
        nodes = nodes_to_poll()
        share: list[int] | None = None  # None: every node's jobs
        if self.membership is not None:
            result.replicas = self.membership.beat()
            nodes = self.membership.mine(nodes, result.replicas)
            share = [node.pk for node in nodes]
        self.tracker.clients.keep_only({node.pk for node in nodes})
        round_jobs = RoundJobs.read(share)  # before any node's listjobs.json: see jobs.onnode
        for node in nodes:
            busy = self.inflight.get(node.pk)
            if busy is not None and not busy[1].done():
                result.skipped.append(node.name)
                continue
            future = self.pool.submit(self._poll, node, round_jobs)
            self.inflight[node.pk] = (node.name, future)
            submitted[future] = node.name
        done, not_done = wait_futures(submitted, timeout=self.interval if wait is None else wait)
        result.polled = sorted(submitted[f] for f in done)
        result.still_running = sorted(submitted[f] for f in not_done)
        for name, job in (("orphaned rows", sweep_orphaned_rows), ("retries", retry.sweep)):
            try:
                job()
            except Exception:
                logger.exception("%s sweep failed", name)
        try:
            completion.sweep()
        except Exception:
            logger.exception("run completion sweep failed")
        self.tracker.forget_stale()
        result.duration = time.monotonic() - started
        POLL_CYCLE.observe(result.duration)  # in the database: all replicas add up
        self.cycles += 1
        return result

    def run(self, stop: threading.Event, once: bool = False) -> None:
        name = self.membership.name if self.membership else "polling every node"
        logger.info("poller %s started: every %.1f s", name, self.interval)
        shared_among = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = self.cycle()
            except Exception:
                logger.exception("poll cycle failed")
                close_old_connections()
            else:
                if result.still_running or result.skipped:
                    logger.info("slow nodes: %s", ", ".join(result.still_running + result.skipped))
                if len(result.replicas) != shared_among and self.membership is not None:
                    shared_among = len(result.replicas)
                    logger.info("nodes shared among %d poller replica(s)", shared_among)
            if once:
                break
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        logger.info("poller stopping after %d cycle(s)", self.cycles)
        self.close()

    def close(self) -> None:
        # Threads blocked on a dead node end with their bounded timeouts; do not wait for them.
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.tracker.clients.close()
        if self.membership is not None:
            try:
                self.membership.leave()
            except Exception:  # e.g. the database is down: the row expires by itself
                logger.exception("could not leave the poller replicas")
