"""Fire-to-accepted latency of the control plane: many tasks due at the same moment.

    .venv/bin/python bench/dispatch.py [--tasks 500] [--rounds 3] [--replicas 1] [--nodes 3]
    .venv/bin/python bench/dispatch.py --projects 5    # priorities, shares and caps enabled
    .venv/bin/python bench/dispatch.py --tasks 2000    # a bigger burst
    .venv/bin/python bench/dispatch.py --replicas 2    # two scheduler processes, one database
    .venv/bin/python bench/dispatch.py --lead 0        # fires recorded and sent once due
    .venv/bin/python bench/dispatch.py --tasks 12000 --notice 20   # a burst longer to record

With ``--projects N`` the tasks are spread over N projects with share weights 1..N, mixed
priorities (-50..50), a cap per task and per project, and a fleet that holds half the burst: the
round then also reports the slots each project got against its weight (``shares``).

Three real ``crawlfleet node`` processes whose declared capacity fits the burst and whose Scrapyd
polls its queue only once an hour, so no crawl starts during the measurement: the figure is the
control plane's own cost. A real ``crawlfleet scheduler`` process (or several) works on a fresh
SQLite database. Every task is given the same fire time a few seconds ahead; a round ends when all
jobs are pending on a node.

Baseline, measured in the same run before the schedulers start: the nodes alone taking a burst
of the same size, ``schedule.json`` sent by the control plane's own sender code (a pool of
``CRAWLFLEET_DISPATCH_WORKERS`` threads, one keep-alive connection per thread and node), each
call timed from the start of that burst to its answer. That is what the nodes and the HTTP calls
cost with no database, no fire and no planning; the scheduler's figures are also given as a
multiple of it. (Also printed: one call at a time per node, the nodes' own cost per call, and
the nodes alone taking the burst as ``schedulebatch.json`` batches, as the dispatcher sends it.)

The schedulers record fires ``CRAWLFLEET_FIRE_LEAD`` seconds ahead and hold their jobs until
the fire; ``--lead 0`` measures the code path without that, in the same run's conditions.

Reported per round: time from the scheduled fire to the TaskRun being recorded, and to Scrapyd
answering schedule.json with the job id (``dispatched_at`` is when the node answered), as p50/p99/
max; jobs per second over the burst; how the jobs spread over the nodes against their share of
capacity x weight; and the checks: every task fired once, nothing missed, every job is on exactly
the node the database names, no node holds a job twice. At the end, the runs and jobs each
scheduler replica counted as its own (its shutdown line) must add up to the database's totals:
each run created by one replica, each job sent by one. Target: p99 under 250 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = Path(sys.executable).parent

from bench.node_floor import (  # noqa: E402
    SPIDER,
    node_batches,
    node_burst,
    percentile,
    print_node_floor,
    start_nodes,
)
from controlplane.lib.procutil import ManagedProcess  # noqa: E402
from tests.fixtures.common import start_schedulers  # noqa: E402

LEAD = 6.0  # seconds between setting a fire time and the fire (the scheduler syncs every 2 s),
# plus the schedulers' own lead, as they record fires that much ahead


def describe(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:7.1f} ms   p99 {percentile(values, 0.99) * 1000:7.1f} ms"
        f"   max {max(values) * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="scheduler processes")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--weights", default="", help="comma-separated node weights, e.g. 1,2,3 (default equal)"
    )
    parser.add_argument(
        "--lead",
        type=float,
        default=None,
        help="CRAWLFLEET_FIRE_LEAD of the schedulers (default: the setting's own; 0: record "
        "and send only once due, the code path before fires were recorded ahead)",
    )
    parser.add_argument(
        "--notice",
        type=float,
        default=None,
        help="seconds between setting a round's fire time and the fire (default: 6 + --lead); "
        "a burst recorded further ahead than the schedulers learn of it needs more",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--projects", type=int, default=0, help="spread over N projects with shares and caps"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="crawlfleet-bench-dispatch-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CRAWLFLEET_DATA_DIR": str(workdir / "cp"),
            "CRAWLFLEET_SECRET_KEY": "bench-only",
            "CRAWLFLEET_LOG_LEVEL": "INFO",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from controlplane.deploys.models import NodeDeployment, Project, Version
    from controlplane.jobs.models import Job
    from controlplane.lib.eggs import build_egg, default_version
    from controlplane.lib.scrapyd import ScrapydClient
    from controlplane.nodes.models import Node
    from controlplane.scheduling.models import Task, TaskRun

    call_command("migrate", verbosity=0)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * args.nodes
    capacity = args.tasks  # each node could take the whole burst: capacity never limits
    if args.projects:
        capacity = max(1, args.tasks // (2 * args.nodes))  # the fleet holds half the burst
    print(f"work directory: {workdir}")
    egg = build_egg(REPO_ROOT, version=default_version(), output_dir=workdir / "egg")
    nodes = start_nodes(args.nodes, workdir, capacity)
    schedulers: list[ManagedProcess] = []
    try:
        project = Project.objects.create(name="crawler")
        data = egg.path.read_bytes()
        version = Version.objects.create(
            project=project,
            version=egg.version,
            egg=data,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            spiders=[SPIDER],
        )
        project.current_version = version
        project.save()
        rows = []
        for index, (url, _) in enumerate(nodes):
            client = ScrapydClient(url, timeout=120)
            client.addversion("crawler", egg.version, data)
            client.listspiders("crawler", egg.version)  # Scrapyd's `scrapy list`, done once
            row = Node.objects.create(
                name=f"bench{index + 1}",
                url=url,
                capacity=capacity,
                weight=weights[index],
                state=Node.State.UP,
            )
            NodeDeployment.objects.create(
                node=row, version=version, state=NodeDeployment.State.DEPLOYED
            )
            rows.append(row)
        print_node_floor([url for url, _ in nodes], egg.version, args.tasks)
        floor = node_burst([url for url, _ in nodes], egg.version, args.tasks)
        node_batches([url for url, _ in nodes], egg.version, args.tasks)
        projects = [project] + [
            shared_project(f"crawler{k + 2}", version, rows, data, nodes, egg.version)
            for k in range(max(0, args.projects - 1))
        ]
        for k, row in enumerate(projects):
            row.share_weight = k + 1 if args.projects else 1
            row.max_concurrent = capacity * args.nodes if args.projects else None
            row.save()
        Task.objects.bulk_create(
            [
                Task(
                    name=f"bench-{i:04d}",
                    project=projects[i % len(projects)],
                    spider=SPIDER,
                    cron="0 0 1 1 *",
                    overlap=Task.Overlap.ALLOW,
                    args={"task": str(i)},
                    priority=(i * 37) % 101 - 50 if args.projects else 0,
                    max_concurrent=1 if args.projects else None,
                )
                for i in range(args.tasks)
            ]
        )
        env = {**os.environ, "CRAWLFLEET_PUBLIC_URL": "http://127.0.0.1:9"}
        if args.lead is not None:
            env["CRAWLFLEET_FIRE_LEAD"] = str(args.lead)
        from django.conf import settings

        lead = settings.CRAWLFLEET_FIRE_LEAD if args.lead is None else args.lead
        print(f"schedulers record fires {lead:g} s ahead (CRAWLFLEET_FIRE_LEAD)")
        schedulers += start_schedulers(args.replicas, env, workdir, "bench")
        time.sleep(3)

        summary: list[tuple[float, float, float, float, bool]] = []
        for round_number in range(1, args.rounds + 1):
            summary.append(
                run_round(round_number, args, projects, rows, nodes, schedulers, timezone, floor)
            )
            # Free the capacity for the next round, as the poller would once the jobs ended.
            Job.objects.filter(state=Job.State.QUEUED).update(state=Job.State.CANCELLED)
            Job.objects.filter(state__in=Job.ON_NODE).update(state=Job.State.SUCCEEDED)
            TaskRun.objects.filter(state=TaskRun.State.ACTIVE).update(state=TaskRun.State.SUCCEEDED)
        if len(summary) > 1:
            print("\nall rounds")
            print(
                f"  p99 fire to accepted, worst round: {max(s[1] for s in summary) * 1000:.1f} ms"
            )
            print(
                f"  jobs per second, median round:      {statistics.median(s[2] for s in summary):.0f}"
            )
        for proc in schedulers:
            phases = re.findall(r"(fired .*|dispatched .*)", proc.log_tail(200_000))
            print(f"\n{proc.name} log, last lines:")
            for line in phases[-6:]:
                print(f"  {line}")
        counted = check_replica_counts(schedulers, TaskRun, Job)
        worst = max(summary, key=lambda s: s[1])
        ok = counted and all(s[4] for s in summary)
        print(
            f"\nsummary: {args.tasks} tasks, {args.nodes} nodes, {args.replicas} scheduler(s), "
            f"{args.projects or 1} project(s), {args.rounds} round(s): worst p99 fire -> accepted "
            f"{worst[1] * 1000:.0f} ms ({worst[1] / floor[1]:.1f}x the nodes alone), its p50 "
            f"{worst[3] * 1000:.0f} ms ({worst[3] / floor[0]:.1f}x); checks "
            f"{'OK' if ok else 'FAILED'}"
        )
    finally:
        for proc in schedulers:
            proc.stop()
        for _, proc in nodes:
            proc.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def check_replica_counts(schedulers, TaskRun, Job) -> bool:
    """Each replica's own counts (its shutdown line) add up to the database's: nothing twice."""
    runs = jobs = 0
    parts = []
    for proc in schedulers:
        proc.stop()
        found = re.search(
            r"stopped: (\d+) run\(s\) created, \d+ .* (\d+) job\(s\) dispatched", proc.log_tail()
        )
        if found is None:
            print(f"  {proc.name}: no shutdown line")
            return False
        runs, jobs = runs + int(found.group(1)), jobs + int(found.group(2))
        parts.append(f"{proc.name} {found.group(1)} runs / {found.group(2)} jobs")
    in_db = TaskRun.objects.count(), Job.objects.exclude(dispatched_at=None).count()
    ok = (runs, jobs) == in_db
    print(
        f"\nreplicas: {', '.join(parts)}; together {runs} runs / {jobs} jobs, the database "
        f"{in_db[0]} / {in_db[1]}: {'OK' if ok else 'FAILED'}"
    )
    return ok


def shared_project(name, version, rows, data, nodes, number):
    """Another project holding the same egg, on every node."""
    from controlplane.deploys.models import NodeDeployment, Project, Version
    from controlplane.lib.scrapyd import ScrapydClient

    project = Project.objects.create(name=name)
    copy = Version.objects.create(
        project=project,
        version=version.version,
        egg=data,
        sha256=version.sha256,
        size=version.size,
        spiders=[SPIDER],
    )
    project.current_version = copy
    project.save()
    for (url, _), row in zip(nodes, rows, strict=True):
        client = ScrapydClient(url, timeout=120)
        client.addversion(name, number, data)
        client.listspiders(name, number)
        NodeDeployment.objects.create(node=row, version=copy, state=NodeDeployment.State.DEPLOYED)
    return project


def report_shares(projects, jobs, fleet_slots):
    """Slots each project got in the burst against its share of the weights."""
    placed = Counter(j.project_id for j in jobs if j.node_id)
    total = sum(p.share_weight for p in projects)
    parts = [
        f"{p.name} w{p.share_weight:g} {placed[p.pk]} (share {p.share_weight / total * fleet_slots:.0f})"
        for p in projects
    ]
    print(f"  shares of {fleet_slots} slots: {', '.join(parts)}")


def run_round(round_number, args, projects, rows, nodes, schedulers, timezone, floor):
    from controlplane.jobs.models import Job
    from controlplane.scheduling.models import Task, TaskRun

    ahead = args.notice if args.notice is not None else LEAD + (args.lead or 0.0)
    fire = (timezone.now() + timedelta(seconds=ahead)).replace(microsecond=0).astimezone(UTC)
    expression = f"{fire.second} {fire.minute} {fire.hour} {fire.day} {fire.month} *"
    # A queryset update skips auto_now: set updated_at, which is how schedulers see a change.
    Task.objects.filter(project__in=projects).update(cron=expression, updated_at=timezone.now())
    deadline = time.monotonic() + ahead + 60
    expected = min(args.tasks, sum(r.capacity for r in rows))
    while time.monotonic() < deadline:
        done = Job.objects.filter(run__scheduled_for=fire, state=Job.State.PENDING).count()
        if done >= expected:
            break
        for proc in schedulers:
            if not proc.alive():
                raise SystemExit(f"{proc.name} died:\n{proc.log_tail()}")
        time.sleep(0.2)
    time.sleep(0.5)

    runs = list(TaskRun.objects.filter(scheduled_for=fire))
    jobs = list(Job.objects.filter(run__scheduled_for=fire).select_related("node"))
    recorded = [(r.created_at - fire).total_seconds() for r in runs]
    accepted = [
        (j.dispatched_at - fire).total_seconds() for j in jobs if j.state == Job.State.PENDING
    ]
    print(f"\nround {round_number}: {args.tasks} tasks due at {fire:%H:%M:%S}")
    print(f"  fire -> run recorded      {describe(recorded)}   (below 0: recorded ahead)")
    if accepted:
        print(f"  fire -> node accepted     {describe(accepted)}")
        print(
            f"  x the nodes alone         p50 {percentile(accepted, 0.5) / floor[0]:7.1f}x     "
            f"p99 {percentile(accepted, 0.99) / floor[1]:7.1f}x"
        )
        # From the first run recorded to the last job accepted: with a lead, that includes
        # the hold until the fire, so it is the rate of the burst, not the scheduler's speed.
        burst = max(accepted) - min(min(recorded), min(accepted))
        print(f"  jobs per second           {len(accepted) / max(burst, 1e-6):7.0f}")

    # Checks: once each, nothing missed, each job on exactly its node and nowhere else.
    per_task = Counter(r.task_id for r in runs)
    states = Counter(r.state for r in runs)
    holders: Counter[str] = Counter()
    where: dict[str, str] = {}
    from controlplane.lib.scrapyd import ScrapydClient

    for url, _ in nodes:
        for project in projects:
            for entry in ScrapydClient(url, timeout=60).listjobs(project.name)["pending"]:
                holders[entry["id"]] += 1
                where[entry["id"]] = url
    ours = {j.scrapyd_job_id for j in jobs if j.node_id}
    duplicates = sum(1 for job_id in ours if holders[job_id] > 1)
    missing = sum(1 for job_id in ours if holders[job_id] == 0)
    misplaced = sum(1 for j in jobs if j.node and where.get(j.scrapyd_job_id) != j.node.url)
    print(
        f"  checks: runs {len(runs)}/{args.tasks} (tasks fired twice: "
        f"{sum(1 for c in per_task.values() if c > 1)}), states {dict(states)}, "
        f"jobs pending {len(accepted)}/{len(jobs)}, duplicates on nodes {duplicates}, "
        f"missing on nodes {missing}, on another node than recorded {misplaced}"
    )
    spread = Counter(j.node.name for j in jobs if j.node)
    total_weight = sum(r.capacity * r.weight for r in rows)
    parts = []
    for row in rows:
        share = row.capacity * row.weight / total_weight * len(jobs)
        parts.append(f"{row.name} {spread[row.name]} (share {share:.0f})")
    print(f"  spread: {', '.join(parts)}")
    windows = []
    for row in rows:
        times = sorted(
            (j.dispatched_at - fire).total_seconds()
            for j in jobs
            if j.node_id == row.pk and j.state == Job.State.PENDING
        )
        if times:
            windows.append(f"{row.name} {times[0] * 1000:.0f}-{times[-1] * 1000:.0f} ms")
    print(f"  accepted by each node between (after the fire): {', '.join(windows)}")
    ok = (
        len(runs) == args.tasks
        and all(c == 1 for c in per_task.values())
        and not duplicates
        and not missing
        and not misplaced
        and len(accepted) == expected
    )
    if args.projects:
        report_shares(projects, jobs, expected)
    print(f"  {'OK' if ok else 'FAILED'}")
    p99 = percentile(accepted, 0.99) if accepted else float("inf")
    p50 = percentile(accepted, 0.5) if accepted else float("inf")
    rate = len(accepted) / max(max(accepted) - min(recorded), 1e-6) if accepted else 0.0
    return (percentile(recorded, 0.99), p99, rate, p50, ok)


if __name__ == "__main__":
    main()
