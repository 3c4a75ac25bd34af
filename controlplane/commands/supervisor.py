"""Supervision of ``crawlfleet up``'s child processes: restarts, crash loops, stop and signals.

Each child runs in its own process group (``ManagedProcess``), so stopping it also stops what it
spawned, such as Scrapyd's spiders. A child that exits is reported and restarted after a short
pause; one that exits ``CRASH_LOOP_EXITS`` times within ``CRASH_LOOP_WINDOW`` seconds is
crash-looping, which a restart will not fix, so supervision gives up.

SIGINT and SIGTERM stop the supervisor. Their handlers are installed explicitly, whatever the
process inherited: a non-interactive shell starts ``cmd &`` with SIGINT ignored, and Python then
never installs its own KeyboardInterrupt handler, so Ctrl-C (or ``kill -INT``) did nothing.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from controlplane.lib.procutil import ManagedProcess

CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW = 60.0
RESTART_PAUSE = 1.0
STOP_TIMEOUT = 15.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown(Exception):
    """SIGINT or SIGTERM arrived: stop every child and exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _ignore_stop_signals()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    # Only the first signal counts: a second Ctrl-C must not interrupt the clean-up.
    _ignore_stop_signals()
    raise Shutdown(signum)


@contextlib.contextmanager
def stop_signals_raise_shutdown() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Shutdown`` inside the block, whatever their inherited handling
    (children started inside get the default handling, not an inherited SIG_IGN); the previous
    handlers are back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_shutdown)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class Child:
    """One supervised process and its recent exits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: ManagedProcess | None = None
    exits: collections.deque[float] = field(default_factory=collections.deque)

    def start(self) -> None:
        self.process = ManagedProcess(
            self.name, self.argv, log_path=self.log_path, env=self.env
        ).start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    @property
    def returncode(self) -> int | None:
        proc = self.process.proc if self.process else None
        return proc.returncode if proc else None

    def log_tail(self, limit: int = 2000) -> str:
        return self.process.log_tail(limit) if self.process else ""

    def wait(self, timeout: float) -> None:
        proc = self.process.proc if self.process else None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)

    def signal_group(self, sig: int) -> None:
        if self.process is not None:
            self.process.signal_group(sig)

    def stop(self, timeout: float) -> None:
        """Stop the whole group; also reaps what an exited leader left behind (spiders)."""
        if self.process is not None:
            self.process.stop(timeout=timeout)

    def record_exit(self, now: float) -> int:
        """Note an exit at ``now``; how many fell within the crash-loop window."""
        self.exits.append(now)
        while self.exits and now - self.exits[0] > CRASH_LOOP_WINDOW:
            self.exits.popleft()
        return len(self.exits)


class Supervisor:
    """The children of one platform, kept running until a signal or a crash loop."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        self.children.append(child)
        child.start()
        return child

    def first_exited(self) -> Child | None:
        return next((child for child in self.children if not child.alive()), None)

    def supervise(self) -> int:
        """Restart children that exit; give up on a crash loop. Returns the exit status."""
        while True:
            time.sleep(0.5)
            for child in self.children:
                if child.alive():
                    continue
                status = child.returncode
                exits = child.record_exit(time.monotonic())
                if exits >= CRASH_LOOP_EXITS:
                    print(
                        f"{child.name} exited {exits} times within "
                        f"{CRASH_LOOP_WINDOW:.0f}s (last status {status}); stopping everything. "
                        f"See {child.log_path}",
                        flush=True,
                    )
                    return 1
                print(
                    f"{child.name} exited with status {status}; restarting it "
                    f"(see {child.log_path})",
                    flush=True,
                )
                child.stop(timeout=2)  # leftovers of its group, e.g. orphaned spiders
                time.sleep(RESTART_PAUSE)
                child.start()

    def stop(self) -> None:
        """Stop every process group: TERM all at once, then KILL whatever is left. SIGINT and
        SIGTERM are ignored meanwhile: nothing may interrupt this and leave groups behind."""
        live = [c for c in self.children if c.process is not None]
        if not live:
            return
        with _stop_signals_ignored():
            print("stopping ...", flush=True)
            for child in live:
                child.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for child in reversed(live):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
                child.stop(timeout=1)
            print("stopped", flush=True)
