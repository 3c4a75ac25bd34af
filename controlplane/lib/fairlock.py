"""A re-entrant lock handed to waiting threads in the order they asked for it.

``threading.RLock`` lets the thread that releases it take it straight back: a thread recording a
burst of fires in chunks, one transaction each, kept the planner waiting until the whole burst
was recorded. With this lock a release hands over to the longest waiter, so the planner plans
the first chunk while the next one waits its turn.
"""

from __future__ import annotations

import threading
from collections import deque


class FairRLock:
    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._waiting: deque[int] = deque()

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._waiting:
                self._owner, self._depth = me, 1
                return True
            self._waiting.append(me)
            try:
                while self._owner is not None or self._waiting[0] != me:
                    self._condition.wait()
            except BaseException:
                self._waiting.remove(me)
                self._condition.notify_all()
                raise
            self._waiting.popleft()
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._condition:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a lock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                if self._waiting:
                    self._condition.notify_all()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
