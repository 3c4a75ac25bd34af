"""What Scrapyd clients polling ``listjobs.json`` cost the control plane.

    .venv/bin/python bench/scrapyd_listjobs.py [--active 300] [--ended 20000] [--clients 20]

A fresh SQLite database holds ``--active`` running or pending jobs and ``--ended`` ended ones (a
fleet with history). Requests go through Django's full stack in-process (middleware, basic auth
with an API token, the view), as a web worker serves them. Measured:

- the server time of one ``listjobs.json`` with the shared answer off and on, against
  ``daemonstatus.json`` in the same run (the ratio is the figure; absolute times are noisy);
- how many SQL queries ``--clients`` clients polling once a second for ten seconds cause,
  with the shared answer off and on (one web process: each process shares its own answer).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def setup(workdir: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    os.environ["CRAWLFLEET_DATA_DIR"] = str(workdir)
    os.environ["CRAWLFLEET_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["CRAWLFLEET_ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def fill(active: int, ended: int) -> str:
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.accounts.models import ApiToken
    from controlplane.deploys.models import Project, Version
    from controlplane.jobs.models import Job
    from controlplane.nodes.models import Node
    from controlplane.scheduling.models import TaskRun

    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="1", egg=b"x", sha256="0" * 64, size=1, spiders=["books"]
    )
    node = Node.objects.create(name="n1", url="http://127.0.0.1:9", state=Node.State.UP)
    now = timezone.now()
    run = TaskRun.objects.create(task=None, trigger=TaskRun.Trigger.API, scheduled_for=now)
    states = [Job.State.RUNNING, Job.State.PENDING, Job.State.QUEUED]
    rows = [
        Job(run=run, project=project, version=version, spider="books", node=node,
            state=states[i % 3], started_at=now)
        for i in range(active)
    ]  # fmt: skip
    rows += [
        Job(run=run, project=project, version=version, spider="books", node=node,
            state=Job.State.SUCCEEDED, started_at=now - timedelta(minutes=i + 1),
            finished_at=now - timedelta(minutes=i))
        for i in range(ended)
    ]  # fmt: skip
    Job.objects.bulk_create(rows, batch_size=2000)
    return ApiToken.create("bench", ApiToken.Role.VIEWER)[1]


def timed(client, path: str, auth: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(path, HTTP_AUTHORIZATION=auth)
        times.append(time.perf_counter() - started)
        if response.status_code != 200 or response.json()["status"] != "ok":
            raise SystemExit(f"{path} failed: {response.content[:500]!r}")
    return times


def queries_of_polling(client, auth: str, clients: int, seconds: int) -> int:
    """Queries for ``clients`` polls a second during ``seconds`` (the clock really advances)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        for _ in range(seconds):
            started = time.monotonic()
            for _ in range(clients):
                client.get("/scrapyd/listjobs.json", HTTP_AUTHORIZATION=auth)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return len(captured.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--active", type=int, default=300)
    parser.add_argument("--ended", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup(Path(tmp))
        from django.conf import settings
        from django.core.cache import cache
        from django.test import Client

        token = fill(args.active, args.ended)
        auth = "Basic " + base64.b64encode(f"bench:{token}".encode()).decode()
        client = Client()
        settings.DEBUG = False
        base = statistics.median(timed(client, "/scrapyd/daemonstatus.json", auth, args.requests))
        settings.CRAWLFLEET_SCRAPYD_LISTING_CACHE = 0
        cold = statistics.median(timed(client, "/scrapyd/listjobs.json", auth, args.requests))
        queries_off = queries_of_polling(client, auth, args.clients, 10)
        settings.CRAWLFLEET_SCRAPYD_LISTING_CACHE = 1.0
        cache.clear()
        warm = statistics.median(timed(client, "/scrapyd/listjobs.json", auth, args.requests))
        queries_on = queries_of_polling(client, auth, args.clients, 10)
        print(f"jobs: {args.active} active, {args.ended} ended; listing shows the newest 100 ended")
        print(f"daemonstatus.json          {base * 1000:7.1f} ms   (baseline)")
        print(f"listjobs.json, not shared  {cold * 1000:7.1f} ms   ratio {cold / base:5.2f}")
        print(f"listjobs.json, shared 1 s  {warm * 1000:7.1f} ms   ratio {warm / base:5.2f}")
        print(
            f"{args.clients} clients polling every second for 10 s: "
            f"{queries_off} queries not shared, {queries_on} shared "
            f"({queries_off / max(queries_on, 1):.0f}x fewer)"
        )


if __name__ == "__main__":
    main()
