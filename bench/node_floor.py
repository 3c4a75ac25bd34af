"""The nodes alone taking a dispatch burst: the baseline of ``bench/dispatch.py``.

Each function sends what the scheduler would, through the control plane's own sender code, but
with no database, no fire and no planning, so what it measures is the nodes and the HTTP calls.
The nodes themselves are started here too: real ``crawlfleet node`` processes whose Scrapyd polls
its queue once an hour, so the jobs they take never launch.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from controlplane.lib.procutil import ManagedProcess, free_port

VENV_BIN = Path(sys.executable).parent
SPIDER = "books"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def print_node_floor(urls: list[str], version: str, tasks: int) -> None:
    """What Scrapyd alone needs per schedule.json, one call after another on each node."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from controlplane.lib.scrapyd import ScrapydClient

    def probe(url: str) -> list[float]:
        client = ScrapydClient(url, timeout=60)
        times = []
        for _ in range(40):
            started = time.perf_counter()
            client.schedule("crawler", SPIDER, version=version, jobid=f"probe-{uuid.uuid4().hex}")
            times.append(time.perf_counter() - started)
        return times

    with ThreadPoolExecutor(len(urls)) as pool:
        per_node = [statistics.median(t) for t in pool.map(probe, urls)]
    share = tasks / len(urls)
    print(
        f"Scrapyd alone: {statistics.median(per_node) * 1000:.1f} ms per schedule.json "
        f"(median over nodes, one call at a time), so a node's share of the burst ({share:.0f} "
        f"jobs) takes it about {statistics.median(per_node) * share:.2f} s"
    )


def node_batches(urls: list[str], version: str, tasks: int) -> None:
    """The nodes alone taking the burst as batches of CRAWLFLEET_DISPATCH_BATCH jobs, sent by
    the control plane's senders: what schedulebatch.json costs with no database and no fire."""
    import uuid

    from django.conf import settings

    from controlplane.jobs import dispatch as dispatcher
    from controlplane.lib.scheduleconnection import batch_entry
    from controlplane.nodes.models import Node

    size = settings.CRAWLFLEET_DISPATCH_BATCH
    share = [urls[i % len(urls)] for i in range(tasks)]
    parts: list[tuple[str, int]] = []
    for url in urls:
        count = share.count(url)
        parts += [(url, min(size, count - k)) for k in range(0, count, size)]

    def one(part: tuple[str, int]) -> float:
        url, count = part
        jobs = [
            batch_entry(
                "crawler",
                SPIDER,
                version,
                f"probe-{uuid.uuid4().hex}",
                {"X": "y" * 120},
                {"task": "1"},
            )
            for _ in range(count)
        ]
        answers = dispatcher._connection_to(Node(url=url)).schedule_batch(jobs)
        assert not any(a.error for a in answers), answers
        return time.perf_counter() - started

    pool = dispatcher._send_pool()
    started = time.perf_counter()
    times = list(pool.map(one, parts))
    print(
        f"Nodes alone, the burst in {len(parts)} schedulebatch.json of up to {size} jobs: "
        f"all accepted after {max(times) * 1000:.1f} ms"
    )


def node_burst(urls: list[str], version: str, tasks: int) -> tuple[float, float]:
    """The nodes alone taking a burst of ``tasks`` jobs through the control plane's senders."""
    import uuid

    from django.conf import settings

    from controlplane.jobs import dispatch as dispatcher
    from controlplane.lib.scrapyd import schedule_form
    from controlplane.nodes.models import Node

    def one(url: str) -> float:
        form = schedule_form(
            "crawler", SPIDER, version, f"probe-{uuid.uuid4().hex}", {"X": "y" * 120}, {"task": "1"}
        )
        dispatcher._connection_to(Node(url=url)).schedule(form)
        return time.perf_counter() - started

    pool = dispatcher._send_pool()
    started = time.perf_counter()
    list(pool.map(one, urls * settings.CRAWLFLEET_DISPATCH_WORKERS))  # warm: connections open
    started = time.perf_counter()
    times = list(pool.map(one, [urls[i % len(urls)] for i in range(tasks)]))
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    print(
        f"Nodes alone, a burst of {tasks} through {settings.CRAWLFLEET_DISPATCH_WORKERS} sender "
        f"threads (the baseline): p50 {p50 * 1000:.1f} ms   p99 {p99 * 1000:.1f} ms   "
        f"max {max(times) * 1000:.1f} ms"
    )
    return p50, p99


def start_nodes(count: int, workdir: Path, capacity: int) -> list[tuple[str, ManagedProcess]]:
    env = dict(os.environ)
    nodes = []
    for index in range(count):
        port = free_port()
        name = f"bench{index + 1}"
        proc = ManagedProcess(
            name,
            [
                str(VENV_BIN / "crawlfleet"),
                "node",
                f"--port={port}",
                f"--dir={workdir / name}",
                f"--name={name}",
                f"--max-proc={capacity}",
                "--poll-interval=3600",
            ],
            log_path=workdir / f"{name}.log",
            cwd=workdir,
            env=env,
        ).start()
        nodes.append((f"http://127.0.0.1:{port}", proc))
    for url, proc in nodes:
        proc.wait_for_port(int(url.rsplit(":", 1)[1]), timeout=60)
    return nodes
