"""Server time of the dashboard's Runs and Jobs pages over 100,000 jobs, filtered and deep.

    .venv/bin/python bench/runs_jobs_pages.py [--jobs 100000] [--requests 20] [--keep DIR]

Seeds a fresh SQLite database (or reuses ``--keep DIR`` from an earlier run): 40 tasks (one
with 30 % of the jobs, one with 0.1 %), 10 nodes, runs a minute apart over two months, 2 % of
them fan-out runs of four shards, states mostly succeeded. Then asks each page, in-process
through Django's test client (so the figure is the control plane's own time, without network),
first pages and pages 60,000 rows deep, and prints p50/p95 per page. Target: p95 under 200 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
STATES = ["succeeded"] * 85 + ["failed"] * 8 + ["cancelled"] * 3 + ["lost"] * 2
STATES += ["timed_out", "running"]


def seed(jobs_wanted: int) -> None:
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from controlplane.deploys.models import Project, Version
    from controlplane.jobs.models import Job
    from controlplane.nodes.models import Node
    from controlplane.scheduling.models import Task, TaskRun

    call_command("migrate", verbosity=0)
    rnd = random.Random(1)
    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="1", egg=b"-", sha256="0" * 64, size=1, spiders=["books"]
    )
    nodes = [
        Node.objects.create(name=f"node-{i}", url=f"http://127.0.0.1:{7000 + i}", state="up")
        for i in range(10)
    ]
    spiders = ["books", "authors", "prices", "reviews", "stock", "ok"]
    tasks = [
        Task.objects.create(
            name=f"task-{i}", project=project, spider=spiders[i % 6], cron="* * * * *"
        )
        for i in range(40)
    ]
    start = timezone.now() - timedelta(days=60)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous = OFF")
    runs, shards, count = [], [], 0
    while count < jobs_wanted:
        pick = rnd.random()
        task = tasks[0] if pick < 0.3 else tasks[39] if pick < 0.301 else rnd.choice(tasks[1:39])
        fanout = 4 if rnd.random() < 0.02 else 1
        at = start + timedelta(seconds=len(runs) * 55)
        runs.append(TaskRun(task=task, scheduled_for=at, state="succeeded", finished_at=at))
        shards.append(fanout)
        count += fanout
    with transaction.atomic():
        TaskRun.objects.bulk_create(runs, batch_size=5000)
        rows = []
        for run, fanout in zip(runs, shards, strict=True):
            for shard in range(fanout):
                rows.append(
                    Job(
                        run=run,
                        task=run.task,
                        shard=shard,
                        project=project,
                        version=version,
                        spider=run.task.spider,
                        node=rnd.choice(nodes),
                        state=rnd.choice(STATES),
                        items=rnd.randint(0, 5000),
                        pages=rnd.randint(0, 5000),
                        reason="finish reason 'finished', 0 error(s)",
                        started_at=run.scheduled_for,
                        finished_at=run.scheduled_for + timedelta(seconds=rnd.randint(5, 900)),
                    )
                )
        Job.objects.bulk_create(rows, batch_size=5000)
        with connection.cursor() as cursor:  # created_at is auto_now_add: spread it like fires
            cursor.execute(
                "UPDATE jobs_job SET created_at = (SELECT scheduled_for FROM scheduling_taskrun r"
                " WHERE r.id = jobs_job.run_id)"
            )
            cursor.execute("UPDATE scheduling_taskrun SET created_at = scheduled_for")


def measure(requests: int) -> bool:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    from controlplane.dashboard.paging import encode
    from controlplane.jobs.models import Job
    from controlplane.scheduling.models import TaskRun

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["*"]
    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client()
    client.force_login(user)
    job = Job.objects.order_by("-created_at", "-pk")[60_000]
    run = TaskRun.objects.order_by("-scheduled_for", "-pk")[60_000]
    deep = f"cursor={encode(job.created_at, job.pk)}"
    deep_run = f"cursor={encode(run.scheduled_for, run.pk)}"
    fanout = Job.objects.filter(shard=3).values_list("run_id", flat=True).first()
    ids = ",".join(str(pk) for pk in Job.objects.values_list("pk", flat=True)[:50])
    pages = [
        "/jobs/",
        f"/jobs/?{deep}",
        "/jobs/?state=failed&state=lost&state=timed_out",
        f"/jobs/?state=failed&state=lost&state=timed_out&{deep}",
        "/jobs/?state=succeeded",
        "/jobs/?task=task-0",
        f"/jobs/?task=task-39&{deep}",
        "/jobs/?node=node-3&state=succeeded",
        f"/jobs/?spider=books&since=2020-01-01T00:00&{deep}",
        f"/jobs/rows/?ids={ids}",
        "/runs/",
        f"/runs/?{deep_run}",
        "/runs/?task=task-5",
        "/runs/?state=succeeded&state=failed",
        f"/runs/{fanout}/",
        f"/jobs/{job.pk}/",
    ]
    worst = 0.0
    print(f"{'page':78} {'p50':>8} {'p95':>8}")
    for url in pages:
        client.get(url)  # warm
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        worst = max(worst, p95)
        print(f"{url[:78]:78} {statistics.median(times):7.1f}ms {p95:7.1f}ms")
    print(f"worst p95: {worst:.1f} ms (target: under 200 ms)")
    return worst < 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="reuse (or create) the database in this dir")
    options = parser.parse_args()
    data_dir = options.keep or Path(tempfile.mkdtemp(prefix="crawlfleet-bench-"))
    fresh = not (data_dir / "crawlfleet.sqlite3").exists()
    os.environ["CRAWLFLEET_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    if fresh:
        began = time.monotonic()
        seed(options.jobs)
        print(f"seeded {options.jobs} jobs in {time.monotonic() - began:.0f} s ({data_dir})")
    sys.exit(0 if measure(options.requests) else 1)


if __name__ == "__main__":
    main()
