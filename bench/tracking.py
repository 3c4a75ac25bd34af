"""One poll round of the control plane over a fleet of real Scrapyd nodes.

    .venv/bin/python bench/tracking.py [--nodes 100] [--sizes 10,50,100] [--jobs-per-node 10]
                                       [--rounds 5] [--workers N]
                                       [--replicas 2] [--profile]

``--nodes`` real ``crawlfleet node`` processes (one crawl slot each, a queue polled once an hour,
so the jobs they are given stay pending and never launch) get the failproject egg and
``--jobs-per-node`` jobs each through schedule.json. A fresh SQLite database holds their Node rows
and the Job rows of those jobs (pending on their node), registered in steps: at each fleet size of
``--sizes`` the first N nodes have rows. An in-process :class:`Poller` then runs ``--rounds``
rounds (after one warm-up round) of :meth:`Poller.cycle`: per node ``daemonstatus.json``, its
jobs read from the database, ``listjobs.json`` and the reconciliation of every job; then the
fleet-wide sweeps. Nothing changes state in a round, as in a quiet fleet.

Reported per size: the wall time of one round (median and max) and the control plane's CPU per
round (``time.process_time`` of this process, all its poll threads, not the nodes), and both per
node; the growth from the smallest size; the RSS of the node processes. The baseline in the same
run is the cost of the bare HTTP calls alone (daemonstatus + listjobs of every node, same thread
pool), so the ratio is what the database and the reconciliation add. Target: a round under 1 s at
100 nodes. ``--profile`` prints the top of a cProfile of one round at the largest size.

``--replicas N`` then runs N poller replicas, each a process of its own sharing the largest fleet
(:mod:`controlplane.loops.shards`), rounds started together behind a barrier. Reported: the round
time (the slowest replica's cycle), each replica's share and CPU, and the ratio to the single
replica measured just before in the same run.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = Path(sys.executable).parent

from controlplane.lib.eggs import build_egg, default_version  # noqa: E402
from controlplane.lib.procutil import ManagedProcess, free_port  # noqa: E402
from controlplane.lib.scrapyd import ScrapydClient  # noqa: E402

TARGET_S = 1.0
PROJECT, SPIDER = "failproject", "ok"


def start_nodes(count: int, workdir: Path) -> list[tuple[ManagedProcess, str]]:
    """Start every node at once, then wait for each to answer (they boot in parallel)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPY", "SCRAPYD"))}
    nodes, ports = [], set()
    for index in range(count):
        port, name = free_port(), f"fleet{index + 1:03d}"
        while port in ports:  # not bound yet by the node just started: free_port may repeat it
            port = free_port()
        ports.add(port)
        argv = [str(VENV_BIN / "crawlfleet"), "node", f"--port={port}", f"--dir={workdir / name}"]
        argv += [f"--name={name}", "--max-proc=1", "--poll-interval=3600"]
        process = ManagedProcess(name, argv, log_path=workdir / f"{name}.log", cwd=workdir, env=env)
        nodes.append((process.start(), f"http://127.0.0.1:{port}"))
    for process, url in nodes:
        process.wait_for_port(int(url.rsplit(":", 1)[1]), timeout=300)
    dead = [process.name for process, _ in nodes if not process.alive()]
    if dead:
        raise SystemExit(f"nodes exited at start: {', '.join(dead)}")
    for _, url in nodes:
        deadline = time.monotonic() + 120
        while True:
            try:
                ScrapydClient(url, timeout=10).daemonstatus()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    return nodes


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (a node has no crawls here)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_node(url: str, egg: bytes, version: str, job_ids: list[str]) -> None:
    client = ScrapydClient(url, timeout=120)
    client.addversion(PROJECT, version, egg)
    for job_id in job_ids:
        client.schedule(PROJECT, SPIDER, version=version, jobid=job_id)


def setup_django(workdir: Path, migrate: bool = True) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CRAWLFLEET_DATA_DIR": str(workdir / "cp"),
            "CRAWLFLEET_DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "CRAWLFLEET_LOG_LEVEL": "WARNING",
            "CRAWLFLEET_SECRET_KEY": "bench-only",
        }
    )
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def register(urls: list[str], first: int, job_ids: dict[str, list[str]], version_row) -> None:
    """Node rows for ``urls`` (numbered from ``first``) and their pending jobs' rows."""
    from django.utils import timezone

    from controlplane.deploys.models import NodeDeployment
    from controlplane.jobs.models import Job
    from controlplane.nodes.models import Node
    from controlplane.scheduling.models import TaskRun

    now = timezone.now()
    run = TaskRun.objects.create(task=None, trigger=TaskRun.Trigger.API, scheduled_for=now)
    for offset, url in enumerate(urls):
        node = Node.objects.create(
            name=f"fleet{first + offset:03d}", url=url, capacity=1, state=Node.State.UP
        )
        NodeDeployment.objects.create(
            node=node, version=version_row, state=NodeDeployment.State.DEPLOYED
        )
        Job.objects.bulk_create(
            Job(run=run, project=version_row.project, version=version_row, spider=SPIDER,
                node=node, state=Job.State.PENDING, scrapyd_job_id=job_id, dispatched_at=now,
                log_url=f"{url}/logs/{PROJECT}/{SPIDER}/{job_id}.log")
            for job_id in job_ids[url]
        )  # fmt: skip


def bare_round(pool: ThreadPoolExecutor, urls: list[str]) -> tuple[float, float]:
    """(wall, CPU) of daemonstatus + listjobs of every node, nothing else: the baseline."""

    def call(url: str) -> None:
        client = ScrapydClient(url, timeout=30)
        client.daemonstatus()
        client.listjobs()

    wall, cpu = time.perf_counter(), time.process_time()
    list(pool.map(call, urls))
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(poller, urls: list[str], rounds: int) -> dict[str, float]:
    from controlplane.jobs.models import Job

    poller.cycle()  # warm-up: health samples, connections
    walls, cpus, bare_walls, bare_cpus = [], [], [], []
    pool = ThreadPoolExecutor(max_workers=poller.pool._max_workers)
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        result = poller.cycle()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        if result.still_running or result.skipped or len(result.polled) != len(urls):
            print(f"  warning: {len(result.polled)} polled, slow {result.still_running}")
        bare_wall, bare_cpu = bare_round(pool, urls)
        bare_walls.append(bare_wall)
        bare_cpus.append(bare_cpu)
    pool.shutdown()
    changed = Job.objects.exclude(state=Job.State.PENDING).count()
    if changed:
        print(f"  warning: {changed} jobs left the pending state")
    return {
        "wall": statistics.median(walls),
        "wall_max": max(walls),
        "cpu": statistics.median(cpus),
        "bare_wall": statistics.median(bare_walls),
        "bare_cpu": statistics.median(bare_cpus),
    }


def profile_round(poller) -> None:
    """cProfile of one round's work run in this thread, node after node (the profiler sees
    one thread only), then the sweeps."""
    from controlplane.jobs import completion, retry
    from controlplane.jobs.onnode import RoundJobs
    from controlplane.jobs.tracking import nodes_to_poll, sweep_orphaned_rows

    profiler = cProfile.Profile()
    profiler.enable()
    round_jobs = RoundJobs.read()
    for node in nodes_to_poll():
        poller.tracker.poll_node(node, round_jobs.for_node(node.pk, max_age=3600))
    sweep_orphaned_rows(), retry.sweep(), completion.sweep()
    profiler.disable()
    print("\none round in one thread, by cumulative time:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def replica_process(
    workdir: Path, name: str, rounds: int, workers: int | None, barrier, out
) -> None:
    """One poller replica of ``--replicas``: join, settle on the split, then timed rounds."""
    setup_django(workdir, migrate=False)
    from django.conf import settings

    from controlplane.loops.poller import Poller

    settings.CRAWLFLEET_POLL_INTERVAL = 60.0
    poller = Poller(interval=60.0, workers=workers, name=name)
    for _ in range(2):  # the first cycle joins; the second polls the settled share (warm-up)
        barrier.wait()
        poller.cycle()
    for _ in range(rounds):
        barrier.wait()
        wall, cpu = time.perf_counter(), time.process_time()
        result = poller.cycle()
        out.put((name, time.perf_counter() - wall, time.process_time() - cpu, len(result.polled),
                 len(result.replicas)))  # fmt: skip
    barrier.wait()
    poller.close()


def measure_replicas(workdir: Path, count: int, rounds: int, workers: int | None) -> list[tuple]:
    """Per round: (slowest wall, [(name, wall, cpu, polled, replicas seen)]) of ``count`` replicas."""
    ctx = multiprocessing.get_context("spawn")  # no Django state or threads carried over
    barrier, out = ctx.Barrier(count), ctx.Queue()
    names = [f"replica-{i + 1}" for i in range(count)]
    procs = [ctx.Process(target=replica_process, args=(workdir, n, rounds, workers, barrier, out))
             for n in names]  # fmt: skip
    for proc in procs:
        proc.start()
    samples = [out.get(timeout=600) for _ in range(rounds * count)]
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            raise SystemExit(f"a replica exited {proc.exitcode}")
    by_round: list[list[tuple]] = [[] for _ in range(rounds)]
    seen: dict[str, int] = {}
    for sample in samples:  # each replica's samples arrive in its own round order
        index = seen.get(sample[0], 0)
        seen[sample[0]] = index + 1
        by_round[index].append(sample)
    return [(max(s[1] for s in one), one) for one in by_round]


def report_replicas(workdir: Path, args, size: int, single: dict[str, float]) -> None:
    rounds = measure_replicas(workdir, args.replicas, args.rounds, args.workers)
    walls = [wall for wall, _ in rounds]
    last = sorted(rounds[-1][1])
    print(f"\n{args.replicas} poller replicas, one process each, sharing {size} nodes:")
    for name, wall, cpu, polled, seen in last:
        print(f"  {name}: {polled} nodes, cycle {wall:.3f} s, CPU {cpu:.3f} s, saw {seen} replicas")
    total = sum(polled for _, _, _, polled, _ in last)
    ok = total == size and all(seen == args.replicas for *_, seen in last)
    median = statistics.median(walls)
    print(
        f"round (slowest replica) median {median:.3f} s, max {max(walls):.3f} s; one replica "
        f"{single['wall']:.3f} s in this run: {single['wall'] / median:.2f}x faster; "
        f"shares add up to the fleet: {'yes' if ok else 'NO'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--sizes", default="10,50,100")
    parser.add_argument("--jobs-per-node", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, help="poll threads (default: the setting, 32)")
    parser.add_argument("--replicas", type=int, default=0, help="then N poller replicas at once")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sizes = sorted(s for s in (int(x) for x in args.sizes.split(",")) if s <= args.nodes)
    nodes: list[tuple[ManagedProcess, str]] = []
    with tempfile.TemporaryDirectory(prefix="crawlfleet-tracking-") as tmp:
        workdir = Path(tmp)
        try:
            started = time.perf_counter()
            egg = build_egg(REPO_ROOT / "tests" / "failproject", version=default_version(),
                            output_dir=workdir / "egg")  # fmt: skip
            nodes = start_nodes(args.nodes, workdir)
            booted = time.perf_counter() - started
            rss = [rss_mb(process.pid) for process, _ in nodes]
            urls = [url for _, url in nodes]
            job_ids = {u: [f"b{i:03d}x{j:02d}" for j in range(args.jobs_per_node)]
                       for i, u in enumerate(urls)}  # fmt: skip
            data = egg.path.read_bytes()
            with ThreadPoolExecutor(max_workers=4) as pool:  # each node runs `scrapy list` once
                list(pool.map(lambda u: load_node(u, data, egg.version, job_ids[u]), urls))
            print(
                f"{len(nodes)} nodes up in {booted:.0f} s, loaded with "
                f"{len(nodes) * args.jobs_per_node:,} pending jobs in "
                f"{time.perf_counter() - started - booted:.0f} s; node RSS "
                f"median {statistics.median(rss):.0f} MB, max {max(rss):.0f} MB, "
                f"total {sum(rss) / 1024:.1f} GB"
            )
            setup_django(workdir)
            from django.conf import settings

            from controlplane.deploys.models import Project, Version
            from controlplane.loops.poller import Poller

            project = Project.objects.create(name=PROJECT)
            version = Version.objects.create(project=project, version=egg.version, egg=data,
                                             sha256="0" * 64, size=len(data), spiders=[SPIDER])  # fmt: skip
            settings.CRAWLFLEET_POLL_INTERVAL = 60.0  # a round waits for every node
            poller = Poller(interval=60.0, workers=args.workers)
            print(
                f"poller: {poller.pool._max_workers} threads; SQLite; load average "
                f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs\n"
            )
            header = f"{'nodes':>5} {'jobs':>5} {'round s':>8} {'max s':>6} {'CPU s':>6}"
            print(f"{header} {'ms/node':>8} {'CPU ms/node':>11} {'bare s':>7} {'x bare':>6}")
            registered, figures = 0, {}
            for size in sizes:
                register(urls[registered:size], registered + 1, job_ids, version)
                registered = size
                f = measure(poller, urls[:size], args.rounds)
                figures[size] = f
                print(
                    f"{size:5d} {size * args.jobs_per_node:5d} {f['wall']:8.3f} "
                    f"{f['wall_max']:6.3f} {f['cpu']:6.3f} {f['wall'] / size * 1000:8.1f} "
                    f"{f['cpu'] / size * 1000:11.1f} {f['bare_wall']:7.3f} "
                    f"{f['wall'] / f['bare_wall']:6.1f}"
                )
            small, large = sizes[0], sizes[-1]
            growth = figures[large]["wall"] / figures[small]["wall"]
            print(
                f"\n{large / small:.0f}x the nodes: {growth:.1f}x the round time, "
                f"{figures[large]['cpu'] / figures[small]['cpu']:.1f}x the CPU"
            )
            if args.profile:
                profile_round(poller)
            verdict = "met" if figures[large]["wall"] < TARGET_S else "missed"
            print(f"target round < {TARGET_S:.0f} s at {large} nodes: {verdict} "
                  f"({figures[large]['wall']:.2f} s)")  # fmt: skip
            poller.close()  # leaves, so the replicas below split the fleet among themselves only
            if args.replicas > 1:
                report_replicas(workdir, args, large, figures[large])
        finally:
            for process, _ in nodes:
                process.stop(timeout=5)


if __name__ == "__main__":
    main()
