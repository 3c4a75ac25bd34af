"""Coordination of one crawl shared by several workers through Redis.

scrapy-redis already gives every worker the same request queue and duplicate filter. What it
leaves open is the life cycle of a crawl that several processes share:

* **Seeding.** Every worker is started with the same arguments, but the start URLs must enter the
  crawl once, however many workers start at the same moment (a ``SET NX`` guard).
* **Knowing when the crawl is done.** A worker with nothing to do cannot tell on its own whether
  the crawl is finished: another worker may be parsing a page that will enqueue a hundred more.
  Each worker is registered in a hash (last heartbeat, by Redis' clock so nodes' clocks don't
  matter) and adds itself to an *idle* set when its engine runs dry. Taking work from the shared
  queue and leaving the idle set happen in one script, so no worker is ever counted idle while it
  holds a request. The crawl is done when both queues are empty and every live worker is idle.
* **Cleaning up.** With ``SCHEDULER_PERSIST=True`` nothing deletes the crawl's keys. The last
  worker to leave a finished crawl deletes all of them in the same script that unregisters it; a
  worker that leaves while others still work, or a last worker that was stopped early, deletes
  nothing, so the crawl can be resumed by starting workers with the same ``crawl_id``.
* **Late workers.** Once a crawl's keys are gone, a worker started late with the same
  ``crawl_id`` (say, one that sat in a busy node's queue) would seed and crawl everything again.
  With ``SHARED_DONE_MARKER_TTL`` > 0 the last worker leaves a ``finished`` marker for that long
  instead, and late workers exit without fetching anything.

* **Losing the frontier.** If Redis loses the crawl's data mid-crawl (restarted without
  persistence, ``FLUSHALL``, keys expired), the queue and the duplicate filter are gone, and an
  idle worker would find "nothing pending, nobody busy" and finish as if the crawl were complete.
  The first worker to join sets an ``alive`` token; every script that hands out work or reports
  on the crawl checks it and fails with :class:`FrontierLost` when it has vanished.

Workers that stop heartbeating (killed, node lost) are dropped from the registry after
``SHARED_WORKER_TIMEOUT`` seconds so they can't hold the crawl open forever. Requests they had
taken from the queue are lost, as with plain scrapy-redis.

This module is a worker's handle on that life cycle, :class:`SharedCrawl`. The keys it works on
are named in :mod:`crawler.redis_keys`, the steps that must be atomic are Lua scripts in
:mod:`crawler.redis_scripts`, and the pieces plugged into scrapy-redis are in
:mod:`crawler.redis_support`.
"""

from __future__ import annotations

import enum
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from crawler import redis_scripts as scripts
from crawler.redis_keys import CrawlKeys
from crawler.sharedkeys import DEFAULT_KEY_PREFIX


class SeedOutcome(enum.Enum):
    """What a worker's seeding attempt found; reported in the ``crawlfleet/shared/seed`` stat."""

    SEEDED = "seeded"
    ALREADY_SEEDED = "already_seeded"
    ALREADY_FINISHED = "already_finished"
    NOTHING_TO_SEED = "nothing_to_seed"


class FrontierLost(Exception):
    """The crawl's keys vanished from Redis mid-crawl: what it had queued and seen is gone."""


@dataclass(frozen=True)
class CrawlStatus:
    """What an idle worker learns about the whole crawl."""

    workers: int
    busy: int
    pending: int

    @property
    def done(self) -> bool:
        return self.busy == 0 and self.pending == 0


@dataclass(frozen=True)
class LeaveOutcome:
    """What unregistering did: ``deleted`` only for the last worker out of a finished crawl."""

    deleted: bool
    remaining_workers: int
    pending: int


def new_worker_id(job: str | None = None) -> str:
    """Unique per process; names the host and pid (and Scrapyd job) so a stuck entry is traceable."""
    parts = [socket.gethostname(), str(os.getpid())]
    if job:
        parts.append(str(job))
    parts.append(uuid.uuid4().hex[:8])
    return ":".join(parts)


class SharedCrawl:
    """One worker's handle on a shared crawl: registry, seeding, work hand-out, idle and leave."""

    def __init__(
        self,
        client: redis.Redis,
        keys: CrawlKeys,
        worker_id: str,
        *,
        worker_timeout: float = 60.0,
        key_ttl: int = 0,
        done_marker_ttl: int = 0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.worker_id = worker_id
        self.worker_timeout = worker_timeout
        self.key_ttl = key_ttl
        self.done_marker_ttl = done_marker_ttl
        # Ours until join() learns the crawl's own (another worker may have joined first).
        self.token = uuid.uuid4().hex
        self._join = client.register_script(scripts.JOIN)
        self._seed = client.register_script(scripts.SEED)
        self._pop_request = client.register_script(scripts.POP_REQUEST)
        self._pop_start_urls = client.register_script(scripts.POP_START_URLS)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._idle = client.register_script(scripts.IDLE)
        self._leave = client.register_script(scripts.LEAVE)

    def join(self) -> int:
        """Register as a busy worker; returns how many workers are registered now."""
        registered, token = self._join(
            keys=[self.keys.workers, self.keys.idle, self.keys.alive],
            args=[self.worker_id, self.token, self.key_ttl],
        )
        self.token = token.decode() if isinstance(token, bytes) else str(token)
        return int(registered)

    def seed(self, urls: list[str]) -> SeedOutcome:
        """Push ``urls`` as the crawl's start URLs unless some worker already did."""
        if not urls:
            return SeedOutcome.NOTHING_TO_SEED
        result = self._seed(
            keys=[self.keys.seeded, self.keys.start_urls, self.keys.finished],
            args=[self.worker_id, *urls],
        )
        return {1: SeedOutcome.SEEDED, 0: SeedOutcome.ALREADY_SEEDED}.get(
            int(result), SeedOutcome.ALREADY_FINISHED
        )

    def pop_request(self, queue_key: str | None = None) -> bytes | None:
        """Take the highest-priority request, marking this worker busy in the same step."""
        return _checked(
            self._pop_request,
            keys=[
                queue_key or self.keys.requests,
                self.keys.workers,
                self.keys.idle,
                self.keys.alive,
            ],
            args=[self.worker_id, self.token],
        )

    def pop_start_urls(self, count: int, key: str | None = None) -> list[bytes]:
        """Take up to ``count`` start URLs, marking this worker busy if there were any."""
        found = _checked(
            self._pop_start_urls,
            keys=[key or self.keys.start_urls, self.keys.workers, self.keys.idle, self.keys.alive],
            args=[self.worker_id, max(1, count), self.token],
        )
        return list(found)

    def heartbeat(self) -> None:
        """Prove this worker is alive; also pushes back the safety-net expiry of the crawl's keys."""
        live_keys = [
            key for key in self.keys.all() if key not in (self.keys.finished, self.keys.alive)
        ]
        _checked(
            self._heartbeat,
            keys=[self.keys.workers, self.keys.alive, *live_keys],
            args=[self.worker_id, self.key_ttl, self.token],
        )

    def mark_idle(self) -> CrawlStatus:
        """Record that this worker has nothing in flight; report on the whole crawl."""
        live, busy, pending = _checked(
            self._idle,
            keys=[
                self.keys.requests,
                self.keys.start_urls,
                self.keys.workers,
                self.keys.idle,
                self.keys.alive,
            ],
            args=[self.worker_id, self.worker_timeout, self.token],
        )
        return CrawlStatus(workers=int(live), busy=int(busy), pending=int(pending))

    def leave(self, *, finished: bool) -> LeaveOutcome:
        """Unregister; the last worker out of a finished crawl with nothing pending deletes it all,
        and so does the last one out of a crawl whose frontier was lost."""
        deleted, remaining, pending = self._leave(
            keys=[
                self.keys.requests,
                self.keys.start_urls,
                self.keys.workers,
                self.keys.idle,
                self.keys.finished,
                self.keys.alive,
                *self.keys.all(),
            ],
            args=[
                self.worker_id,
                "1" if finished else "0",
                self.worker_timeout,
                self.done_marker_ttl,
            ],
        )
        return LeaveOutcome(bool(deleted), int(remaining), int(pending))


def _checked(script: Script, *, keys: list[str], args: list[str | int | float]) -> Any:
    """Run ``script``; its frontier-lost error reply becomes :class:`FrontierLost`."""
    try:
        return script(keys=keys, args=args)
    except redis.ResponseError as exc:
        if str(exc).startswith(scripts.FRONTIER_LOST):
            detail = str(exc).removeprefix(scripts.FRONTIER_LOST).split(" script: ")[0]
            raise FrontierLost(detail.strip()) from None
        raise


def purge_crawl(
    client: redis.Redis, spider: str, crawl_id: str, prefix: str = DEFAULT_KEY_PREFIX
) -> int:
    """Delete every key of a crawl, e.g. one abandoned after its workers were cancelled.

    Returns how many keys existed. Don't call it while workers of that crawl still run.
    """
    return int(client.delete(*CrawlKeys.build(prefix, spider, crawl_id).all()))
