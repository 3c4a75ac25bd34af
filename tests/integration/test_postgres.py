"""The control plane on a real PostgreSQL server, the production database.

The pytest-django database is SQLite, so everything here runs in subprocesses pointed at
PostgreSQL through ``CRAWLFLEET_DATABASE_URL``, as replicas would be in production: concurrent
starts that each try to migrate, racing schedulers recording the same fire, and racing
dispatchers claiming the same queued jobs. Workers meet at a barrier (a file) so their critical
calls really overlap.

Run as ``python -m tests.integration.test_postgres ACTION ...`` this module is that worker.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.common import REPO_ROOT, start_schedulers, wait_until
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
VENV_BIN = Path(sys.executable).parent


# --- the worker (runs in subprocesses) -------------------------------------------------------
def _barrier(sync_dir: Path) -> None:
    """Say we are ready, then wait for the go signal, so workers start their race together."""
    (sync_dir / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (sync_dir / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.002)


def _seed(nodes: int, capacity: int, queued: int, cron: str = "* * * * *") -> dict[str, Any]:
    """A project with one deployed version on ``nodes`` up nodes, a task, ``queued`` jobs."""
    import hashlib

    from django.utils import timezone

    from controlplane.deploys.models import NodeDeployment, Project, Version
    from controlplane.jobs.models import Job
    from controlplane.nodes.models import Node
    from controlplane.scheduling.models import Task, TaskRun

    project = Project.objects.create(name="crawler")
    egg = b"not really an egg"
    version = Version.objects.create(
        project=project,
        version="1",
        egg=egg,
        sha256=hashlib.sha256(egg).hexdigest(),
        size=len(egg),
        spiders=["books"],
    )
    project.current_version = version
    project.save()
    for i in range(nodes):
        node = Node.objects.create(
            name=f"node-{i}",
            url=f"http://127.0.0.1:{6900 + i}",
            capacity=capacity,
            state=Node.State.UP,
        )
        NodeDeployment.objects.create(node=node, version=version, state="deployed")
    # overlap "allow": every fire gets its own run and job, none is skipped as overlapping.
    task = Task.objects.create(
        name="books", project=project, spider="books", cron=cron, overlap=Task.Overlap.ALLOW
    )
    run = TaskRun.objects.create(task=None, trigger="api", scheduled_for=timezone.now())
    Job.objects.bulk_create(
        Job(run=run, project=project, spider="books", version=version) for _ in range(queued)
    )
    return {"task": task.pk}


def _create_run(task_id: int, scheduled_for: str) -> dict[str, Any]:
    from datetime import datetime

    from controlplane.jobs.runs import create_run
    from controlplane.scheduling.models import Task

    run = create_run(Task.objects.get(pk=task_id), datetime.fromisoformat(scheduled_for))
    return {"run": run.pk if run else None}


def _plan(rounds: int) -> dict[str, Any]:
    from controlplane.jobs.placement import plan

    claimed: list[int] = []
    for _ in range(rounds):
        claimed += [placement.job.pk for placement in plan()]
    return {"claimed": claimed}


def worker(argv: list[str]) -> None:
    from controlplane.django_setup import setup

    setup()
    action, *rest = argv
    if action == "seed":
        nodes, capacity, queued, *cron = rest
        result = _seed(int(nodes), int(capacity), int(queued), *cron)
    elif action == "create-run":
        task_id, scheduled_for, sync_dir = rest
        _barrier(Path(sync_dir))
        result = _create_run(int(task_id), scheduled_for)
    elif action == "plan":
        rounds, sync_dir = rest
        _barrier(Path(sync_dir))
        result = _plan(int(rounds))
    else:
        raise SystemExit(f"unknown action {action}")
    print("RESULT " + json.dumps(result), flush=True)


# --- the tests -------------------------------------------------------------------------------
def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _crawlfleet(*args: str) -> list[str]:
    return [str(VENV_BIN / "crawlfleet"), *args]


def _worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.integration.test_postgres", *args]


def _result(output: str) -> dict[str, Any]:
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _race(argvs: list[list[str]], env: dict[str, str], sync_dir: Path) -> list[dict[str, Any]]:
    """Start the workers, release them together once all are ready, collect their results."""
    sync_dir.mkdir()
    procs = [
        subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for argv in argvs
    ]
    try:

        def ready() -> bool:
            if len(list(sync_dir.glob("ready-*"))) >= len(procs):
                return True
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
            return False

        wait_until(ready, 60, "workers ready", interval=0.01)
        (sync_dir / "go").touch()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output
    return [_result(output) for output in outputs]


def test_concurrent_starts_migrate_once_and_completely(
    pg_env: dict[str, str], postgres_server: PostgresServer
) -> None:
    """Three replicas starting at once on an empty database: all succeed, schema complete."""
    env = {**pg_env, "CRAWLFLEET_ADMIN_USER": "admin", "CRAWLFLEET_ADMIN_PASSWORD": "pw-12345678"}
    procs = [
        subprocess.Popen(
            _crawlfleet("web", "--migrate-only"),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output
    # Exactly one of them applied the migrations; the others waited and found nothing to do.
    assert sum("Applying contenttypes.0001_initial" in out for out in outputs) == 1, outputs
    _run(_crawlfleet("manage", "migrate", "--check"), pg_env)
    database = pg_env["CRAWLFLEET_DATABASE_URL"].rsplit("/", 1)[1]
    with postgres_server.connect(database) as conn:
        users = conn.execute(
            "SELECT username, is_superuser FROM auth_user WHERE username = 'admin'"
        ).fetchall()
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    assert users == [("admin", True)]
    assert {"scheduling_taskrun", "jobs_job", "nodes_node", "deploys_version"} <= tables


def test_racing_schedulers_record_one_run_per_fire(
    migrated_env: dict[str, str], postgres_server: PostgresServer, tmp_path: Path
) -> None:
    task_id = _result(_run(_worker("seed", "1", "4", "0"), migrated_env))["task"]
    fire = "2030-01-01T12:00:00+00:00"
    results = _race(
        [_worker("create-run", str(task_id), fire, str(tmp_path / "sync")) for _ in range(4)],
        migrated_env,
        tmp_path / "sync",
    )
    winners = [r["run"] for r in results if r["run"] is not None]
    assert len(winners) == 1, results
    database = migrated_env["CRAWLFLEET_DATABASE_URL"].rsplit("/", 1)[1]
    with postgres_server.connect(database) as conn:
        runs = conn.execute(
            "SELECT id FROM scheduling_taskrun WHERE task_id = %s", [task_id]
        ).fetchall()
        jobs = conn.execute(
            "SELECT count(*) FROM jobs_job WHERE run_id = %s", [winners[0]]
        ).fetchone()
    assert runs == [(winners[0],)]
    assert jobs == (1,)


def test_racing_dispatchers_never_claim_a_job_twice_or_overfill_nodes(
    migrated_env: dict[str, str], postgres_server: PostgresServer, tmp_path: Path
) -> None:
    nodes, capacity, queued = 3, 4, 30
    _run(_worker("seed", str(nodes), str(capacity), str(queued)), migrated_env)
    results = _race(
        [_worker("plan", "3", str(tmp_path / "sync")) for _ in range(4)],
        migrated_env,
        tmp_path / "sync",
    )
    claimed = [job for r in results for job in r["claimed"]]
    assert len(claimed) == len(set(claimed)), f"a job was claimed twice: {results}"
    # Every replica saw the others' claims: the fleet is exactly full, never over.
    assert len(claimed) == nodes * capacity, results
    database = migrated_env["CRAWLFLEET_DATABASE_URL"].rsplit("/", 1)[1]
    with postgres_server.connect(database) as conn:
        per_node = conn.execute(
            "SELECT node_id, count(*) FROM jobs_job WHERE state = 'dispatching' GROUP BY node_id"
        ).fetchall()
        still_queued = conn.execute(
            "SELECT count(*) FROM jobs_job WHERE state = 'queued' AND node_id IS NULL"
        ).fetchone()
    assert sorted(count for _, count in per_node) == [capacity] * nodes
    assert still_queued == (queued - nodes * capacity,)


def test_scheduler_replicas_fire_every_second_exactly_once(
    migrated_env: dict[str, str], postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Three real `crawlfleet scheduler` processes on one per-second task: no fire twice or lost."""
    task_id = _result(_run(_worker("seed", "0", "1", "0", "* * * * * *"), migrated_env))["task"]
    env = {**migrated_env, "CRAWLFLEET_SCHEDULER_TICK": "0.5", "CRAWLFLEET_LOG_LEVEL": "INFO"}
    replicas = start_schedulers(3, env, tmp_path, "replica", "--sync-interval", "0.5")
    try:
        time.sleep(10)
        for proc in replicas:
            assert proc.alive(), proc.log_tail()
    finally:
        for proc in replicas:
            proc.stop()
    database = migrated_env["CRAWLFLEET_DATABASE_URL"].rsplit("/", 1)[1]
    with postgres_server.connect(database) as conn:
        fires = [
            row[0]
            for row in conn.execute(
                "SELECT scheduled_for FROM scheduling_taskrun WHERE task_id = %s "
                "ORDER BY scheduled_for",
                [task_id],
            ).fetchall()
        ]
        jobs_per_run = conn.execute(
            "SELECT r.id, count(j.id) FROM scheduling_taskrun r "
            "LEFT JOIN jobs_job j ON j.run_id = r.id WHERE r.task_id = %s GROUP BY r.id",
            [task_id],
        ).fetchall()
    logs = "\n".join(proc.log_tail(20000) for proc in replicas)
    assert len(fires) >= 4, logs
    assert len(set(fires)) == len(fires)
    # Every second between the first and the last fire was recorded, once.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    assert gaps == [1.0] * len(gaps), fires
    assert {count for _, count in jobs_per_run} == {1}
    assert "Traceback" not in logs, logs


if __name__ == "__main__":
    worker(sys.argv[1:])
