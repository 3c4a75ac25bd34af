"""The data behind bench/dashboard.py: a fleet's 30 days (or more), written with ``COPY``.

10 nodes, 20 tasks and one run per fire of each, about one job per run (the first attempt), about
10 % of them failed, lost or timed out and most of those retried once, the last 40 minutes' jobs
still in flight; every finished job carries a Scrapy stats dict; 20,000 audit entries.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from datetime import timedelta

from bench import bulk_rows

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


def fill(total_jobs: int, rng: random.Random, days: int = DAYS) -> dict:
    """The fleet's history: ``total_jobs`` jobs over ``days`` days up to now (so the daily volume
    is ``total_jobs / days``), their runs and progress samples, the audit trail, an admin."""
    from django.contrib.auth import get_user_model
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
    start = now - timedelta(days=days)
    runs = run_rows(tasks, total_jobs, start, timedelta(days=days))
    fleet = {
        "project": project.pk,
        "versions": [v.pk for v in versions],
        "nodes": [n.pk for n in nodes],
        "spiders": {t.pk: t.spider for t in tasks},
    }
    with own_timestamps(TaskRun, Job):
        bulk_rows.write(TaskRun, runs)
        jobs = bulk_rows.write(Job, job_rows(runs, total_jobs, fleet, rng, now))
    samples = progress_samples(now)
    admin = get_user_model().objects.create_user("bench-admin", password="bench-password-1")
    set_role(admin, "admin")
    actions = ["login", "task.update", "job.retry", "job.cancel", "token.create", "deploy.upload"]
    AuditEntry.objects.bulk_create(
        (
            AuditEntry(
                at=start + timedelta(seconds=rng.randint(0, days * 86400)),
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
    return {"tasks": tasks, "nodes": nodes, "jobs": jobs, "samples": samples, "days": days}


def run_rows(tasks, total_jobs: int, start, span: timedelta) -> list[dict]:
    """One run per fire of each task, evenly spread, ids in the order they were fired."""
    runs_per_task = int(total_jobs / 1.08 / TASKS)
    every = span / runs_per_task
    runs = sorted(
        (
            {
                "task_id": task.pk,
                "trigger": "cron",
                "scheduled_for": start + every * i + timedelta(seconds=t * 7),
                "state": "succeeded",
                "created_at": start + every * i,
            }
            for t, task in enumerate(tasks)
            for i in range(runs_per_task)
        ),
        key=lambda run: run["scheduled_for"],
    )
    for number, run in enumerate(runs, start=1):
        run["id"] = number
    return runs


def job_rows(runs: list[dict], total_jobs: int, fleet: dict, rng: random.Random, now):
    """The jobs of ``runs`` in the order the control plane would have written them (which is what
    the planner's correlation statistics see): a retry comes when its first try has ended, so
    pending retries wait in a heap until the runs catch up with their time. Ids are given in that
    order, so a retry can name its first try."""
    pending: list[tuple] = []  # (created_at, tie, run, first try)
    written = 0

    def emit(run, number, after=None):
        nonlocal written
        written += 1
        return attempt(written, run, number, rng, fleet, now, after)

    for run in runs:
        created = run["scheduled_for"] + timedelta(seconds=1)
        while pending and pending[0][0] <= created and written < total_jobs:
            _, _, retried_run, first = heapq.heappop(pending)
            yield emit(retried_run, 2, first)
        if written >= total_jobs:
            return
        first = emit(run, 1)
        yield first
        if first["state"] in ("failed", "lost", "timed_out") and rng.random() < 0.8:
            retry_at = first["finished_at"] + timedelta(seconds=30)
            heapq.heappush(pending, (retry_at, first["id"], run, first))
    while pending and written < total_jobs:
        _, _, retried_run, first = heapq.heappop(pending)
        yield emit(retried_run, 2, first)


def progress_samples(now) -> int | None:
    """Heartbeat samples, where the jobs app keeps them (``JobSample``): 30 per job that ended in
    the last three days (or still runs), 3 per older one. None when there is no such model."""
    from django.apps import apps
    from django.db import connection

    from controlplane.jobs.models import Job

    try:
        sample = apps.get_model("jobs", "JobSample")
    except LookupError:
        return None
    if not {"job", "at", "items", "pages", "errors"} <= {f.name for f in sample._meta.fields}:
        print("note: JobSample has other fields than job/at/items/pages/errors; no samples")
        return None
    recent = now - timedelta(days=3)
    if bulk_rows.is_postgres():  # in the database: a million jobs never come out to Python
        with connection.cursor() as cursor:
            cursor.execute(
                f"""INSERT INTO {sample._meta.db_table} (job_id, at, items, pages, errors)
                SELECT j.id, j.started_at + (COALESCE(j.finished_at, %s) - j.started_at) * i / n,
                       j.items * i / n, j.pages * i / n, j.errors * i / n
                FROM (SELECT *, CASE WHEN COALESCE(finished_at, %s) > %s THEN 30 ELSE 3 END n
                      FROM {Job._meta.db_table} WHERE started_at IS NOT NULL) j,
                     generate_series(1, j.n) i""",
                [now, now, recent],
            )
            return cursor.rowcount

    def rows():
        started = Job.objects.filter(started_at__isnull=False)
        for job in started.values("id", "started_at", "finished_at", "items", "pages", "errors"):
            end = job["finished_at"] or now
            count = 30 if end > recent else 3
            step = (end - job["started_at"]) / count
            for i in range(1, count + 1):
                yield {
                    "job_id": job["id"],
                    "at": job["started_at"] + step * i,
                    **{k: job[k] * i // count for k in ("items", "pages", "errors")},
                }

    return bulk_rows.write(sample, rows())


def attempt(number_id, run, number, rng, fleet, now, after=None) -> dict:
    """Attempt ``number`` of ``run`` (after the failed ``after``), as a row of the job table."""
    from controlplane.jobs.models import rank_of  # what QueueRankField computes on insert

    created = (
        (after["finished_at"] + timedelta(seconds=30))
        if after
        else run["scheduled_for"] + timedelta(seconds=1)
    )
    job = {
        "id": number_id,
        "run_id": run["id"],
        "task_id": run["task_id"],  # Job.save() copies the run's task
        "attempt": number,
        "retry_of_id": after["id"] if after else None,
        "project_id": fleet["project"],
        "spider": fleet["spiders"][run["task_id"]],
        "version_id": rng.choice(fleet["versions"]),
        "node_id": rng.choice(fleet["nodes"]),
        "scrapyd_job_id": f"{rng.getrandbits(128):032x}",
        "created_at": created,
        "updated_at": created,
        "queue_rank": rank_of(0.0, created),
    }
    if now - created < timedelta(minutes=40):  # recent: still in flight
        job["state"] = rng.choice(
            ["queued", "dispatching", "pending", "running", "running", "running"]
        )
        if job["state"] == "queued":
            job["node_id"] = None
        else:
            job["dispatched_at"] = created + timedelta(seconds=1)
        if job["state"] == "running":
            job["started_at"] = created + timedelta(seconds=3)
            job["last_heartbeat"] = now - timedelta(seconds=rng.randint(1, 20))
        return job
    state = (
        rng.choices([s for s, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
        if number == 1
        else rng.choice(["succeeded"] * 8 + ["failed"] * 2)
    )
    started = created + timedelta(seconds=3)
    finished = min(now, started + timedelta(seconds=rng.randint(30, 2400)))
    items = rng.randint(0, 5000) if state == "succeeded" else rng.randint(0, 300)
    pages = items + rng.randint(1, 200)
    errors = rng.randint(0, 3) if state == "succeeded" else rng.randint(1, 80)
    job.update(
        state=state,
        dispatched_at=created + timedelta(seconds=1),
        started_at=started,
        finished_at=finished,
        items=items,
        pages=pages,
        errors=errors,
        finish_reason={"succeeded": "finished", "cancelled": "shutdown"}.get(state, ""),
        exit_status=0 if state in ("succeeded", "cancelled") else rng.choice([1, None]),
        stats=scrapy_stats(rng, items, pages, errors, started, finished),
        updated_at=finished,
    )
    return job
