"""PostgreSQL, the production database, stopped and started again while jobs run.

Web, scheduler and poller run as real processes on PostgreSQL with real Scrapyd nodes; the
server itself is shut down (clients disconnected) mid-run, kept down a few seconds while the
crawls go on, and started again on the same port and data. No process is restarted: each must
reconnect by itself (Django's ``CONN_HEALTH_CHECKS`` and ``close_old_connections`` at the top of
every loop), the jobs running across the outage are tracked to their end, a run requested after
it is dispatched and tracked too, and the web server answers from the database again.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from controlplane.lib.procutil import free_port
from tests.chaos.helpers import wait_for
from tests.fixtures.common import REPO_ROOT, VENV_BIN

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.scrapyd, pytest.mark.slow]

# pg_env, migrated_template and migrated_env are tests/fixtures/postgres.py's.

SEED = """
import hashlib, json
from django.utils import timezone
from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.jobs.runs import create_run
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
project = Project.objects.create(name="failproject")
version = Version.objects.create(project=project, version={version!r}, egg=b"", sha256="0" * 64,
                                 size=0, spiders=["ok", "sleepy"])
project.current_version = version
project.save()
for index, url in enumerate({urls!r}):
    node = Node.objects.create(name=f"node-{{index}}", url=url, capacity=2, state="up")
    NodeDeployment.objects.create(node=node, version=version, state="deployed")
sleepy = Task.objects.create(name="sleepy", project=project, spider="sleepy", cron="0 0 1 1 *",
                             args={{"seconds": "6"}}, overlap="allow")
Task.objects.create(name="ok", project=project, spider="ok", cron="0 0 1 1 *", overlap="allow")
for _ in range(3):
    create_run(sleepy, timezone.now(), TaskRun.Trigger.MANUAL)
"""
RUN_OK = """
from django.utils import timezone
from controlplane.jobs.runs import create_run
from controlplane.scheduling.models import Task, TaskRun
create_run(Task.objects.get(name="ok"), timezone.now(), TaskRun.Trigger.MANUAL)
"""


def manage_shell(code: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "crawlfleet"), "manage", "shell", "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_processes_reconnect_after_a_database_restart_and_track_every_job(
    migrated_env, postgres_server, cp_env, cp_process, scrapyd_nodes, failproject_egg
):
    nodes = scrapyd_nodes(2, max_proc=2, poll_interval=0.2)
    for node in nodes:
        node.deploy(failproject_egg)
    database_url = migrated_env["CRAWLFLEET_DATABASE_URL"]
    database = database_url.rsplit("/", 1)[1]
    env = {"CRAWLFLEET_DATABASE_URL": database_url, "CRAWLFLEET_LOG_LEVEL": "INFO"}
    manage_shell(
        SEED.format(version=failproject_egg.version, urls=[n.url for n in nodes]),
        {**cp_env, **env},
    )
    port = free_port()
    web = cp_process("web", "--bind", f"127.0.0.1:{port}", name="web", env=env)
    web.wait_for_port(port, timeout=90)
    processes = [
        web,
        cp_process("scheduler", name="scheduler", env=env),
        cp_process("poller", name="poller", env=env),
    ]

    def jobs() -> list[tuple[int, str, str]]:
        with postgres_server.connect(database) as conn:
            rows = conn.execute("SELECT id, spider, state FROM jobs_job ORDER BY id")
            return [tuple(row) for row in rows.fetchall()]

    def metrics_ok() -> bool:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        return response.status_code == 200 and "crawlfleet_" in response.text

    wait_for(
        lambda: [state for _, _, state in jobs()] == ["running"] * 3,
        timeout=40,
        what="three running jobs",
        processes=processes,
    )
    assert metrics_ok()

    postgres_server.stop()
    time.sleep(3)  # the loops fail their cycles meanwhile; the crawls go on
    for proc in processes:
        assert proc.alive(), f"{proc.name} died while the database was down:\n{proc.log_tail()}"
    postgres_server.start()

    manage_shell(RUN_OK, {**cp_env, **env})
    wait_for(metrics_ok, timeout=30, what="metrics from the database", processes=processes)

    def all_ended() -> list[tuple[int, str, str]] | None:
        rows = jobs()
        return rows if len(rows) == 4 and all(s not in LIVE for _, _, s in rows) else None

    LIVE = {"queued", "dispatching", "pending", "running"}
    ended = wait_for(all_ended, timeout=60, what="every job ended", processes=processes)
    assert [state for _, _, state in ended] == ["succeeded"] * 4, ended

    def runs_closed() -> list[str] | None:
        with postgres_server.connect(database) as conn:
            states = [r[0] for r in conn.execute("SELECT state FROM scheduling_taskrun")]
        return states if "active" not in states else None

    # A run closes just after its last job ends, in the poller's next step.
    closed = wait_for(runs_closed, timeout=30, what="closed runs", processes=processes)
    assert closed == ["succeeded"] * 4
