"""The supervisor of ``crawlfleet up`` on real processes: crash loops, group stops, signals."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from controlplane.commands import supervisor
from controlplane.commands.supervisor import (
    Child,
    Shutdown,
    Supervisor,
    stop_signals_raise_shutdown,
)
from tests.fixtures.common import wait_until


def python_child(tmp_path: Path, name: str, code: str) -> Child:
    return Child(name, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.log")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_crash_loop_stops_supervision(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(supervisor, "RESTART_PAUSE", 0.05)
    crashing = Supervisor()
    crashing.start(python_child(tmp_path, "crasher", "import sys; sys.exit(3)"))

    assert crashing.supervise() == 1
    output = capsys.readouterr().out
    restarts = supervisor.CRASH_LOOP_EXITS - 1
    assert output.count("crasher exited with status 3; restarting it") == restarts
    window = f"{supervisor.CRASH_LOOP_WINDOW:.0f}s"
    assert f"crasher exited {supervisor.CRASH_LOOP_EXITS} times within {window}" in output
    crashing.stop()


def test_stop_ends_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(300)"
    )
    group = Supervisor()
    leader = group.start(python_child(tmp_path, "leader", code))
    grandchild = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, "pid"))

    group.stop()

    assert not leader.alive()
    assert wait_until(lambda: not alive(grandchild), 5, "grandchild gone")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_raise_shutdown_even_when_inherited_as_ignored(signum):
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_signals_raise_shutdown(), pytest.raises(Shutdown):
            signal.raise_signal(signum)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the previous handling is back
    finally:
        signal.signal(signal.SIGINT, before)
