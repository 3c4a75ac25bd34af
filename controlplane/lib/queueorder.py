"""Who runs next, on plain data: priority with aging, and fair share between projects.

No Django here, so the rules are unit-tested on plain values; ``controlplane.jobs.placement``
feeds them database rows.

- **Aging.** A job's effective priority is ``priority + seconds_queued / aging``: one point per
  ``aging`` seconds waited, so a low priority is never starved forever. Ordering by it needs no
  clock: ``effective(a) > effective(b)`` exactly when ``rank(a) < rank(b)`` with
  ``rank = queued_at - priority * aging`` (the instant the job counts as queued since). The rank
  is stored on the job, so a project's queue is one index range, best first.
- **Fair share.** Each free slot goes to the project with the lowest ``(running + 1) / weight``
  among projects with dispatchable work (ties: the better head job, then the key), then to that
  project's best job. A heap keeps this O(log projects) per slot, whatever the queue's length.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

# Used when aging is switched off (0): priorities then decide alone, ties by age.
NO_AGING = 1e9

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def aging_seconds(aging: float) -> float:
    return aging if aging > 0 else NO_AGING


def queue_rank(priority: float, queued_at: float, aging: float) -> float:
    """The stored sort key (lower goes first): ``queued_at`` (epoch seconds) minus the head start
    the priority gives."""
    return queued_at - priority * aging_seconds(aging)


def effective_priority(priority: float, queued_at: float, now: float, aging: float) -> float:
    """``priority`` plus one point per ``aging`` seconds queued."""
    return priority + max(0.0, now - queued_at) / aging_seconds(aging)


class Verdict(enum.Enum):
    PLACED = "placed"  # the job took a slot
    SKIP = "skip"  # this job cannot go now; the project's next job may
    STOP = "stop"  # nothing more of this project can go now (its cap)
    FULL = "full"  # no slot is left anywhere: stop


class Heads(Generic[T]):
    """A project's jobs, best first, read lazily; ``head`` is the next one (None at the end)."""

    def __init__(self, jobs: Iterable[T]) -> None:
        self._jobs: Iterator[T] = iter(jobs)
        self.head: T | None = None
        self.advance()

    def advance(self) -> None:
        self.head = next(self._jobs, None)


def fill(
    queues: Mapping[K, Iterable[T]],
    weights: Mapping[K, float],
    running: Mapping[K, int],
    slots: int,
    try_place: Callable[[K, T], Verdict],
    rank: Callable[[T], float],
) -> list[T]:
    """Offer up to ``slots`` jobs, fairly between projects; returns the jobs placed, in order.

    ``queues`` maps a project to its jobs best first (an iterator is read only as far as
    needed); ``running`` is each project's in-flight count; ``try_place`` decides each offer.
    """
    counts = {key: running.get(key, 0) for key in queues}
    heads = {key: Heads(jobs) for key, jobs in queues.items()}

    def entry(key: K) -> tuple[float, float, int, K]:
        share = (counts[key] + 1) / max(weights.get(key, 1.0), 1e-9)
        return (share, rank(heads[key].head), order[key], key)  # type: ignore[arg-type]

    order = {key: index for index, key in enumerate(queues)}
    heap = [entry(key) for key in queues if heads[key].head is not None]
    heapq.heapify(heap)
    placed: list[T] = []
    while heap and len(placed) < slots:
        key = heapq.heappop(heap)[3]
        queue = heads[key]
        job = queue.head
        assert job is not None
        verdict = try_place(key, job)
        if verdict is Verdict.FULL:
            break
        if verdict is Verdict.STOP:
            continue
        if verdict is Verdict.PLACED:
            placed.append(job)
            counts[key] += 1
        queue.advance()
        if queue.head is not None:
            heapq.heappush(heap, entry(key))
    return placed
