"""The container entrypoints run outside a container, in docker-compose.yml's order, starting the
real processes. The files themselves are checked in test_deploy_files.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from controlplane.lib.procutil import ManagedProcess, free_port
from tests.fixtures.common import REPO_ROOT, VENV_BIN
from tests.integration.test_deploy_files import SECRETS


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _exec_cmdline(pid: int, timeout: float = 10.0) -> list[str]:
    """The command line once the entrypoint script has exec'd into crawlfleet."""
    deadline = time.monotonic() + timeout
    while True:
        cmdline = _cmdline(pid)  # briefly empty while the exec happens
        if len(cmdline) > 2 and Path(cmdline[1]).name == "crawlfleet":
            return cmdline
        if time.monotonic() > deadline:
            return cmdline
        time.sleep(0.05)


@pytest.mark.scrapyd
@pytest.mark.slow
def test_entrypoints_start_the_real_processes_in_compose_order(tmp_path: Path) -> None:
    """migrate, then web, scheduler and poller, then a node registering itself with its token."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CRAWLFLEET_")},
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CRAWLFLEET_DATA_DIR": str(tmp_path / "data"),
        "CRAWLFLEET_SECRET_KEY": "entrypoint-test",
        "CRAWLFLEET_PUBLIC_URL": url,
        "CRAWLFLEET_ADMIN_USER": "admin",
        "CRAWLFLEET_ADMIN_PASSWORD": SECRETS["CRAWLFLEET_ADMIN_PASSWORD"],
        "CRAWLFLEET_NODE_TOKEN": SECRETS["CRAWLFLEET_NODE_TOKEN"],
        "CRAWLFLEET_DEPLOY_TOKEN": SECRETS["CRAWLFLEET_DEPLOY_TOKEN"],
        "CRAWLFLEET_POLL_INTERVAL": "1",
    }
    entrypoint = str(REPO_ROOT / "deploy/controlplane-entrypoint.sh")
    migrate = subprocess.run(
        [entrypoint, "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "ensured admin user 'admin'" in migrate.stderr

    started: list[ManagedProcess] = []

    def start(name: str, argv: list[str], **extra: str) -> ManagedProcess:
        proc = ManagedProcess(
            name, argv, log_path=tmp_path / "logs" / f"{name}.log", env={**env, **extra}
        ).start()
        started.append(proc)
        return proc

    try:
        web = start("web", [entrypoint, "web", "--no-migrate", "--bind", f"127.0.0.1:{port}"])
        web.wait_for_port(port, timeout=60)
        scheduler = start("scheduler", [entrypoint, "scheduler"])
        poller = start("poller", [entrypoint, "poller"])
        # The entrypoint execs: the managed pid is crawlfleet itself, so signals reach it.
        for proc, command in ((web, "web"), (scheduler, "scheduler"), (poller, "poller")):
            cmdline = _exec_cmdline(proc.pid)
            assert [Path(arg).name for arg in cmdline[1:3]] == ["crawlfleet", command], cmdline
        assert requests.get(f"{url}/admin/login/", timeout=10).status_code == 200

        node_port = free_port()
        node = start(
            "node",
            [str(REPO_ROOT / "deploy/node-entrypoint.sh")],
            CRAWLFLEET_NODE_PORT=str(node_port),
            CRAWLFLEET_NODE_BIND="127.0.0.1",
            CRAWLFLEET_NODE_DIR=str(tmp_path / "node"),
            CRAWLFLEET_NODE_NAME="node-1",
            CRAWLFLEET_NODE_MAX_PROC="2",
            CRAWLFLEET_REGISTER_URL=url,
        )
        node.wait_for_port(node_port, timeout=60)
        assert "--token" not in _exec_cmdline(node.pid), (
            "the token must stay out of the command line"
        )
        status = requests.get(f"http://127.0.0.1:{node_port}/daemonstatus.json", timeout=10).json()
        assert status["status"] == "ok"

        headers = {"Authorization": f"Bearer {SECRETS['CRAWLFLEET_DEPLOY_TOKEN']}"}
        deadline = time.monotonic() + 60
        registered: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            listing = requests.get(f"{url}/api/v1/nodes", headers=headers, timeout=10)
            assert listing.status_code == 200, listing.text
            registered = [n for n in listing.json() if n["name"] == "node-1"]
            if registered and registered[0]["state"] == "up":
                break
            time.sleep(0.5)
        assert registered, f"the node never registered:\n{node.log_tail()}"
        assert registered[0]["state"] == "up", registered
        assert registered[0]["url"] == f"http://127.0.0.1:{node_port}"
        assert registered[0]["capacity"] == 2

        for proc in started:
            assert proc.alive(), f"{proc.name} died:\n{proc.log_tail()}"
        # Graceful stop, as `docker stop` would do it.
        for proc in (web, scheduler, poller):
            os.kill(proc.pid, signal.SIGTERM)
        for proc in (web, scheduler, poller):
            assert proc.proc is not None
            assert proc.proc.wait(timeout=30) == 0, f"{proc.name}:\n{proc.log_tail()}"
    finally:
        for proc in reversed(started):
            proc.stop()
