"""The data behind bench/dashboard.py: a fleet's 30 days, written with bulk inserts.

10 nodes, 20 tasks and one run per fire of each, about one job per run (the first attempt), about
10 % of them failed, lost or timed out and most of those retried once, the last 40 minutes' jobs
still in flight; every finished job carries a Scrapy stats dict; 20,000 audit entries.
"""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta

NODES, TASKS, DAYS = 10, 20, 30
# outcome of a first attempt: (state, weight)
OUTCOMES = [("succeeded", 86), ("failed", 6), ("lost", 2), ("timed_out", 2), ("cancelled", 4)]


def scrapy_stats(rng: random.Random, items: int, pages: int, errors: int, start, end) -> dict:
    """A stats dict shaped like the one a finished Scrapy crawl reports."""
    requests = pages + rng.randint(0, 20)
    return {
        "downloader/request_bytes": requests * 310,
        "downloader/request_count": requests,
        "downloader/request_method_count/GET": requests,
        "downloader/response_bytes": pages * rng.randint(8_000, 60_000),
        "downloader/response_count": pages,
        "downloader/response_status_count/200": pages - min(pages, errors),
        "downloader/response_status_count/404": min(pages, errors),
        "elapsed_time_seconds": (end - start).total_seconds(),
        "finish_reason": "finished",
        "finish_time": end.isoformat(),
        "httpcompression/response_bytes": pages * 41_000,
        "httpcompression/response_count": pages,
        "item_scraped_count": items,
        "log_count/DEBUG": requests + items,
        "log_count/ERROR": errors,
        "log_count/INFO": 12 + int((end - start).total_seconds() // 60),
        "log_count/WARNING": rng.randint(0, 3),
        "memusage/max": rng.randint(80, 400) * 2**20,
        "memusage/startup": 70 * 2**20,
        "request_depth_max": rng.randint(1, 6),
        "response_received_count": pages,
        "scheduler/dequeued": requests,
        "scheduler/dequeued/memory": requests,
        "scheduler/enqueued": requests,
        "scheduler/enqueued/memory": requests,
        "start_time": start.isoformat(),
    }


@contextlib.contextmanager
def own_timestamps(*models):
    """Let bulk inserts keep the historic created_at/updated_at they were given."""
    fields = [
        f
        for m in models
        for f in m._meta.fields
        if getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False)
    ]
    saved = [(f, f.auto_now, f.auto_now_add) for f in fields]
    for f in fields:
        f.auto_now = f.auto_now_add = False
    try:
        yield
    finally:
        for f, auto_now, auto_now_add in saved:
            f.auto_now, f.auto_now_add = auto_now, auto_now_add


def fill(total_jobs: int, rng: random.Random) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management.color import no_style
    from django.db import connection
    from django.utils import timezone

    from controlplane.accounts.models import AuditEntry
    from controlplane.accounts.roles import set_role
    from controlplane.deploys.models import NodeDeployment, Project, Version
    from controlplane.jobs.models import Job
    from controlplane.nodes.models import Node
    from controlplane.scheduling.models import Task, TaskRun

    now = timezone.now()
    project = Project.objects.create(name="crawler")
    versions = [
        Version.objects.create(
            project=project,
            version=str(100 + i),
            egg=b"egg",
            sha256="0" * 64,
            size=3,
            spiders=["books", "news", "shop"],
        )
        for i in range(3)
    ]
    project.current_version = versions[-1]
    project.save()
    states = ["up"] * 8 + ["degraded", "down"]
    nodes = [
        Node.objects.create(
            name=f"node-{i:02d}",
            url=f"http://10.0.0.{i + 1}:6800",
            capacity=rng.choice([4, 8, 8, 16]),
            state=states[i],
            last_seen=now,
        )
        for i in range(NODES)
    ]
    NodeDeployment.objects.bulk_create(
        NodeDeployment(node=n, version=v, state="deployed") for n in nodes for v in versions
    )
    crons = ["*/10 * * * *", "*/15 * * * *", "0 * * * *", "30 */2 * * *", "5 4 * * *"]
    tasks = [
        Task.objects.create(
            name=f"task-{i:02d}",
            project=project,
            spider=["books", "news", "shop"][i % 3],
            cron=crons[i % len(crons)],
            timezone=["UTC", "Europe/Paris", "America/New_York"][i % 3],
            enabled=i != 7,
        )
        for i in range(TASKS)
    ]
    runs_per_task = int(total_jobs / 1.08 / TASKS)
    every = timedelta(days=DAYS) / runs_per_task
    start = now - timedelta(days=DAYS)
    runs = sorted(
        (
            TaskRun(
                task=task,
                trigger="cron",
                scheduled_for=start + every * i + timedelta(seconds=t * 7),
                state="succeeded",
                created_at=start + every * i,
            )
            for t, task in enumerate(tasks)
            for i in range(runs_per_task)
        ),
        key=lambda run: run.scheduled_for,
    )
    jobs = []
    for run in runs:
        first = attempt(run, 1, rng, nodes, versions, now)
        jobs.append(first)
        if first.state in ("failed", "lost", "timed_out") and rng.random() < 0.8:
            jobs.append(attempt(run, 2, rng, nodes, versions, now, after=first))
    # Rows in the order the control plane would have written them (which is what the planner's
    # correlation statistics see), with ids assigned up front so a retry can name its first try.
    jobs.sort(key=lambda job: job.created_at)
    for number, job in enumerate(jobs[:total_jobs], start=1):
        job.id = number
    jobs = [job for job in jobs[:total_jobs] if job.retry_of is None or job.retry_of.id]
    with own_timestamps(TaskRun, Job):
        TaskRun.objects.bulk_create(runs, batch_size=5000)
        copies_task = any(f.name == "task" for f in Job._meta.get_fields())
        for job in jobs:
            job.run_id = job.run.pk  # the runs got their ids just now
            if copies_task:  # Job.save() copies the run's task; bulk_create does not call it
                job.task_id = job.run.task_id
        Job.objects.bulk_create(jobs, batch_size=2000)
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [Job]):
            cursor.execute(sql)
    samples = progress_samples(jobs, now, rng)
    admin = get_user_model().objects.create_user("bench-admin", password="bench-password-1")
    set_role(admin, "admin")
    actions = ["login", "task.update", "job.retry", "job.cancel", "token.create", "deploy.upload"]
    AuditEntry.objects.bulk_create(
        (
            AuditEntry(
                at=start + timedelta(seconds=rng.randint(0, DAYS * 86400)),
                actor_kind="user",
                actor=rng.choice(["alice", "bob", "ci"]),
                action=rng.choice(actions),
                target=rng.choice(tasks).name,
                detail={"changes": {"cron": ["0 * * * *", "*/5 * * * *"]}},
                ip="10.1.2.3",
            )
            for _ in range(20_000)
        ),
        batch_size=5000,
    )
    return {"tasks": tasks, "nodes": nodes, "jobs": len(jobs), "samples": samples}


def progress_samples(jobs, now, rng: random.Random) -> int | None:
    """Heartbeat samples, where the jobs app keeps them (``JobSample``): 30 per job of the last
    three days, 3 per older one. None when there is no such model."""
    from django.apps import apps

    try:
        sample = apps.get_model("jobs", "JobSample")
    except LookupError:
        return None
    if not {"job", "at", "items", "pages", "errors"} <= {f.name for f in sample._meta.fields}:
        print("note: JobSample has other fields than job/at/items/pages/errors; no samples")
        return None
    rows, written = [], 0
    for job in jobs:
        if job.started_at is None:
            continue
        end = job.finished_at or now
        count = 30 if now - end < timedelta(days=3) else 3
        step = (end - job.started_at) / count
        for i in range(1, count + 1):
            share = i / count
            rows.append(
                sample(
                    job_id=job.id,
                    at=job.started_at + step * i,
                    items=int(job.items * share),
                    pages=int(job.pages * share),
                    errors=int(job.errors * share),
                )
            )
        if len(rows) >= 20_000:
            sample.objects.bulk_create(rows)
            written, rows = written + len(rows), []
    sample.objects.bulk_create(rows)
    return written + len(rows)


def attempt(run, number, rng, nodes, versions, now, after=None):
    from controlplane.jobs.models import Job

    created = (
        (after.finished_at + timedelta(seconds=30))
        if after
        else run.scheduled_for + timedelta(seconds=1)
    )
    age = now - created
    job = Job(
        run=run,
        attempt=number,
        retry_of=after,
        project_id=versions[0].project_id,
        spider=run.task.spider,
        version=rng.choice(versions),
        node=rng.choice(nodes),
        created_at=created,
        updated_at=created,
    )
    if age < timedelta(minutes=40):  # recent: still in flight
        job.state = rng.choice(
            ["queued", "dispatching", "pending", "running", "running", "running"]
        )
        if job.state == "queued":
            job.node = None
        else:
            job.dispatched_at = created + timedelta(seconds=1)
        if job.state == "running":
            job.started_at = created + timedelta(seconds=3)
            job.last_heartbeat = now - timedelta(seconds=rng.randint(1, 20))
        return job
    job.state = (
        rng.choices([s for s, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
        if number == 1
        else rng.choice(["succeeded"] * 8 + ["failed"] * 2)
    )
    job.dispatched_at = created + timedelta(seconds=1)
    job.started_at = created + timedelta(seconds=3)
    job.finished_at = min(now, job.started_at + timedelta(seconds=rng.randint(30, 2400)))
    job.items = rng.randint(0, 5000) if job.state == "succeeded" else rng.randint(0, 300)
    job.pages = job.items + rng.randint(1, 200)
    job.errors = rng.randint(0, 3) if job.state == "succeeded" else rng.randint(1, 80)
    job.finish_reason = {"succeeded": "finished", "cancelled": "shutdown"}.get(job.state, "")
    job.exit_status = 0 if job.state in ("succeeded", "cancelled") else rng.choice([1, None])
    job.stats = scrapy_stats(rng, job.items, job.pages, job.errors, job.started_at, job.finished_at)
    job.updated_at = job.finished_at
    return job
