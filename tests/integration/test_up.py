"""``crawlfleet up``: the whole platform from one command, as ``make run`` starts it.

One platform with two real Scrapyd nodes comes up in a temporary data dir. The test logs into the
admin with the printed login, checks through the REST API that the nodes registered, the egg was
deployed and the example task exists, then runs the books spider with the CI smoke script
(deploy/ci/smoke-run.sh), kills a service to see it restarted, and stops the platform with
SIGINT. That platform is started the way a script's ``crawlfleet up &`` starts it, with SIGINT
ignored: ``up`` must stop on it all the same, and its services must not inherit the ignore. No
process of that platform may be left behind. A second ``up`` on the same data dir reuses the
login and the deployed egg and stops on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from controlplane.lib.procutil import free_port
from tests.fixtures.common import REPO_ROOT

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]
VENV_BIN = Path(sys.executable).parent
READY_LINE = "Press Ctrl-C to stop."
# What a non-interactive shell does to `cmd &`: SIGINT ignored, inherited through exec.
SIGINT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$0" "$@"']


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root`` (any session), with its command line."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: dict[int, str] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        command = cmdline(pid)
        if command is not None:
            found[pid] = command
        stack.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> str | None:
    """The command line of a live (not zombie) process, or None."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


def ignores_sigint(pid: int) -> bool:
    """Whether the process ignores SIGINT (its SigIgn mask in /proc); False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        command = cmdline(int(entry.name))
        if command and text in command and int(entry.name) != os.getpid():
            found.append(f"{entry.name}: {command}")
    return found


class Up:
    """A running ``crawlfleet up`` whose output goes to a file the test reads."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output
            if READY_LINE in output:
                return output
            if self.proc.poll() is not None:
                pytest.fail(f"crawlfleet up exited {self.proc.returncode}:\n{output}")
            time.sleep(0.25)
        pytest.fail(f"crawlfleet up not ready in {timeout}s:\n{self.output}")

    def stop(self, sig: int, timeout: float = 45) -> int:
        """Signal up and wait; every process below it must be gone afterwards."""
        below = descendants(self.proc.pid)
        assert below, "up runs its services as child processes"
        self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"crawlfleet up did not stop in {timeout}s:\n{self.output}")
        deadline = time.monotonic() + 5
        while True:
            left = {pid: cmd for pid, cmd in below.items() if cmdline(pid) == cmd}
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not left, f"processes left behind: {left}"
        return status

    def kill_everything(self) -> None:
        """Clean-up after a failed test: SIGKILL up and every process below it."""
        below = descendants(self.proc.pid)
        for pid in [self.proc.pid, *below]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    started: list[Up] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLFLEET_")}
    env.update(
        CRAWLFLEET_SCHEDULER_TICK="0.5",
        CRAWLFLEET_POLL_INTERVAL="1",
        CRAWLFLEET_SPIDER_HEARTBEAT="2",
    )

    def start(*args: str, sigint_ignored: bool = False) -> Up:
        log = tmp_path / f"up-{len(started)}.out"
        argv = [str(VENV_BIN / "crawlfleet"), "up", *args]
        up = Up([*SIGINT_IGNORED, *argv] if sigint_ignored else argv, env, tmp_path, log)
        started.append(up)
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            up.kill_everything()


def admin_login_works(url: str, username: str, password: str) -> bool:
    session = requests.Session()
    session.get(f"{url}/admin/login/", timeout=10).raise_for_status()
    response = session.post(
        f"{url}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{url}/admin/login/"},
        timeout=10,
    )
    return response.ok and response.url.endswith("/admin/") and 'id="user-tools"' in response.text


def test_up_brings_the_platform_up_runs_a_crawl_and_stops_cleanly(tmp_path: Path, start_up) -> None:
    data = tmp_path / "var"
    port, demo_port, scrapyd_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["--nodes", "2", "--data-dir", str(data), "--port", str(port)]
    args += ["--node-port", "0", "--demo-port", str(demo_port), "--max-proc", "2"]
    args += ["--scrapyd-port", str(scrapyd_port)]

    up = start_up(*args, sigint_ignored=True)
    output = up.wait_ready(timeout=150)
    assert f"dashboard  {url}/" in output
    assert f"Scrapyd    {url}/scrapyd/ and http://127.0.0.1:{scrapyd_port}/" in output
    login = re.search(r"login\s+(\S+) / (\S+)", output)
    assert login, output
    username, password = login.groups()
    stored = json.loads((data / "admin-login.json").read_text())
    assert (username, password) == (stored["username"], stored["password"])
    assert (data / "admin-login.json").stat().st_mode & 0o077 == 0
    assert admin_login_works(url, username, password)

    token = (data / "api-token").read_text().strip()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    nodes = {n["name"]: n for n in api.get(f"{url}/api/v1/nodes", timeout=10).json()}
    assert set(nodes) == {"local-1", "local-2"}
    assert all(n["state"] == "up" and n["capacity"] == 2 for n in nodes.values()), nodes
    versions = api.get(f"{url}/api/v1/projects/crawler/versions", timeout=10).json()
    assert len(versions) == 1, versions
    assert "books" in versions[0]["spiders"]
    tasks = {t["name"]: t for t in api.get(f"{url}/api/v1/tasks", timeout=10).json()}
    assert tasks["books-demo"]["spider"] == "books"
    assert tasks["books-demo"]["cron"] == "*/5 * * * *"
    assert tasks["books-demo"]["args"]["start_url"].startswith(f"http://127.0.0.1:{demo_port}/")
    # The same fleet as one Scrapyd, at the root of its own port.
    listed = requests.get(
        f"http://127.0.0.1:{scrapyd_port}/listprojects.json", auth=("ops", token), timeout=10
    ).json()
    assert listed["projects"] == ["crawler"], listed

    # The CI smoke stage, against this platform: run books on a node and wait for success.
    smoke = subprocess.run(
        [str(REPO_ROOT / "deploy/ci/smoke-run.sh"), "--timeout", "90", "--interval", "0.5"],
        env={**os.environ, "CRAWLFLEET_URL": url, "CRAWLFLEET_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr + up.output
    assert re.search(r"OK: run \d+ succeeded with 200 items", smoke.stdout), smoke.stdout

    # A second platform on the same data dir is refused while this one runs.
    rival = start_up(*args)
    assert rival.proc.wait(timeout=30) == 1
    assert "another `crawlfleet up` is running on" in rival.output

    # A crashed service is reported and restarted.
    pollers = [pid for pid, cmd in descendants(up.proc.pid).items() if "crawlfleet poller" in cmd]
    assert len(pollers) == 1, descendants(up.proc.pid)
    os.kill(pollers[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    restarted: list[int] = []
    while time.monotonic() < deadline and not restarted:
        time.sleep(0.2)
        restarted = [
            pid
            for pid, cmd in descendants(up.proc.pid).items()
            if "crawlfleet poller" in cmd and pid != pollers[0]
        ]
    assert restarted, up.output
    assert "poller exited with status -9; restarting it" in up.output

    services = descendants(up.proc.pid)
    assert [cmd for pid, cmd in services.items() if ignores_sigint(pid)] == []
    assert up.stop(signal.SIGINT) == 0
    assert processes_mentioning(str(data)) == []

    # A second start reuses the login and the deployed egg, and stops on SIGTERM.
    again = start_up(*args)
    output = again.wait_ready(timeout=120)
    assert f"login      {username} / {password}" in output
    assert "(unchanged, not redeployed)" in output
    assert again.stop(signal.SIGTERM) == 0
    assert processes_mentioning(str(data)) == []
