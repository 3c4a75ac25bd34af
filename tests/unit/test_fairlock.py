"""The write lock hands over to the longest waiter, and is re-entrant."""

from __future__ import annotations

import threading
import time

import pytest

from controlplane.lib.fairlock import FairRLock


def test_a_release_hands_the_lock_to_the_thread_waiting_for_it():
    lock = FairRLock()
    order: list[str] = []
    waiting = threading.Event()

    def chunks() -> None:
        for _ in range(3):
            with lock:
                order.append("chunk")
                waiting.wait(1)  # the other thread is queued by now
                time.sleep(0.01)

    def planner() -> None:
        time.sleep(0.005)
        waiting.set()
        for _ in range(3):
            with lock:
                order.append("plan")

    threads = [threading.Thread(target=chunks), threading.Thread(target=planner)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert order == ["chunk", "plan", "chunk", "plan", "chunk", "plan"]


def test_it_is_reentrant_and_refuses_a_release_by_another_thread():
    lock = FairRLock()
    with lock, lock:
        errors: list[BaseException] = []

        def release() -> None:
            try:
                lock.release()
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=release)
        thread.start()
        thread.join(5)
        assert len(errors) == 1
    acquired = threading.Event()
    thread = threading.Thread(target=lambda: (lock.acquire(), acquired.set(), lock.release()))
    thread.start()
    thread.join(5)
    assert acquired.is_set()


def test_releasing_an_unheld_lock_fails():
    with pytest.raises(RuntimeError):
        FairRLock().release()
