"""One Redis-fed shared crawl, one worker against two: pages per second and the ratio.

    .venv/bin/python bench/shared_crawl.py [--pages 10000] [--rounds 3]

The target is the demo bookshop pre-rendered and served by ``bench/static_site.py`` (a bare
asyncio loop in its own process), so the site is never what the workers wait for. Each crawl is
real ``scrapy crawl shared_books`` processes sharing one crawl id on a private ``redis-server``,
with the project's settings as in production: its middlewares, extensions and pipelines
(validation, CSV), except the two that need a service this script does not run: the Kafka
pipeline (no ``KAFKA_BOOTSTRAP_SERVERS``) and the reports to the control plane (no
``CRAWLFLEET_REPORT_URL``). The 1-worker crawl is the baseline of the 2-worker one, measured in the
same round; the order alternates between rounds.

Every crawl is checked, or the script stops: the site's own hit counts show every page of the
shop fetched exactly once (``robots.txt`` once per worker, nothing else), the workers' stats add
up to the same pages and to one item per book, each worker finished with no ERROR line, and once
the workers have exited a ``SCAN`` of the whole Redis finds no key at all (the last worker out
deletes the crawl's keys, as at the real end of a run; the control plane's purge, its safety net,
is not run, so it cannot hide a leak).

Pages per second are the site's: pages over the time between its first and last hit. Alongside:
the workers' CPU per page, the Redis commands per page and Redis' and the site's CPU per page.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.static_site import site_paths  # noqa: E402
from controlplane.lib.procutil import ManagedProcess, free_port  # noqa: E402
from demo.catalogue import BROKEN_EVERY_PAGE, PER_PAGE, page_count  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402

SCRAPY = str(Path(sys.executable).parent / "scrapy")
STATS_RE = re.compile(r"Dumping Scrapy stats:\n(\{.*?\})\n", re.S)
GOAL = 1.7


def books_for(pages: int, per_page: int) -> int:
    """How many books make a shop of about ``pages`` URLs (list, detail and broken-link pages)."""
    books = pages
    while books > 1:
        lists = page_count(books, per_page)
        if books + lists + lists // BROKEN_EVERY_PAGE <= pages:
            return books
        books -= 1
    return 1


@dataclass
class Crawl:
    workers: int
    pages: int
    seconds: float  # site's first hit to its last
    wall: float  # first worker launched to last worker exited
    worker_cpu: float
    redis_cpu: float
    site_cpu: float
    redis_calls: dict[str, int]
    per_worker_pages: list[int]
    per_worker_declined: list[int]  # pops declined because the downloader was full
    machine_busy: float  # CPU-seconds the whole machine was busy during the crawl

    @property
    def rate(self) -> float:
        return self.pages / self.seconds

    def per_page_ms(self, cpu: float) -> float:
        return 1000 * cpu / self.pages

    @property
    def others_cores(self) -> float:
        """How many cores the rest of the machine (not this crawl) kept busy meanwhile."""
        ours = self.worker_cpu + self.redis_cpu + self.site_cpu
        return max(0.0, self.machine_busy - ours) / self.wall


def machine_busy_seconds() -> float:
    """CPU-seconds every core of the machine has spent busy since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(
        self,
        workdir: Path,
        books: int,
        per_page: int,
        settings: dict[str, str],
        profile: Path | None,
    ) -> None:
        self.workdir = workdir
        self.books = books
        self.expected = set(site_paths(books, per_page))
        self.settings = settings
        self.profile = profile
        self.redis = RedisServer(workdir / "redis")
        (workdir / "redis").mkdir()
        port = free_port()
        self.site_url = f"http://127.0.0.1:{port}"
        self.site = ManagedProcess(
            "static_site",
            [
                sys.executable,
                str(REPO_ROOT / "bench" / "static_site.py"),
                "--port",
                str(port),
                "--books",
                str(books),
                "--per-page",
                str(per_page),
            ],
            log_path=workdir / "site.log",
            cwd=REPO_ROOT,
        )
        self.site_port = port
        self.crawls = 0

    def start(self) -> None:
        self.redis.start()
        self.site.start()
        self.site.wait_for_port(self.site_port)

    def stop(self) -> None:
        self.site.stop()
        self.redis.stop()

    def site_get(self, path: str) -> Any:
        with urllib.request.urlopen(self.site_url + path, timeout=30) as answer:
            return json.loads(answer.read())

    def site_cpu(self) -> float:
        fields = Path(f"/proc/{self.site.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def redis_figures(self) -> tuple[float, dict[str, int]]:
        with self.redis.client() as client:
            cpu = client.info("cpu")
            commands = client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()}
        return cpu["used_cpu_user"] + cpu["used_cpu_sys"], calls

    def launch(self, job: str, crawl_id: str) -> tuple[subprocess.Popen[bytes], Path]:
        argv = [SCRAPY, "crawl", "shared_books", "-a", f"_job={job}", "-a", f"crawl_id={crawl_id}"]
        if self.profile:
            self.profile.mkdir(parents=True, exist_ok=True)
            argv = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(self.profile / f"{job}.prof"),
                *argv,
            ]
        argv += ["-a", f"start_url={self.site_url}/catalogue/page-1.html"]
        settings = {
            "REDIS_URL": self.redis.url,
            "CRAWLFLEET_CSV_DIR": str(self.workdir / "csv"),
            "LOG_LEVEL": "INFO",
            **self.settings,
        }
        for key, value in settings.items():
            argv += ["-s", f"{key}={value}"]
        log_path = self.workdir / f"{job}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        return proc, log_path

    def crawl(self, workers: int) -> Crawl:
        self.crawls += 1
        crawl_id = f"bench-{self.crawls}-{workers}w"
        self.site_get("/__reset")
        redis_cpu0, calls0 = self.redis_figures()
        site_cpu0 = self.site_cpu()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0 = machine_busy_seconds()
        started = time.monotonic()
        launched = [self.launch(f"{crawl_id}-w{n}", crawl_id) for n in range(1, workers + 1)]
        for proc, log_path in launched:
            if proc.wait(timeout=1800) != 0:
                raise SystemExit(
                    f"worker exited {proc.returncode}:\n{log_path.read_text()[-4000:]}"
                )
        wall = time.monotonic() - started
        busy1 = machine_busy_seconds()
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        site_cpu1 = self.site_cpu()
        redis_cpu1, calls1 = self.redis_figures()
        stats = [self.stats_of(log_path) for _, log_path in launched]
        hits = self.site_get("/__hits")
        self.check(crawl_id, workers, stats, hits["hits"])
        calls = {name: n - calls0.get(name, 0) for name, n in calls1.items()}
        calls = {name: n for name, n in calls.items() if n and name not in ("info", "ping")}
        return Crawl(
            workers=workers,
            pages=len(self.expected),
            seconds=hits["last"] - hits["first"],
            wall=wall,
            worker_cpu=(usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
            redis_cpu=redis_cpu1 - redis_cpu0,
            site_cpu=site_cpu1 - site_cpu0,
            redis_calls=calls,
            per_worker_pages=[int(s.get("response_received_count", 0)) for s in stats],
            per_worker_declined=[int(s.get("crawlfleet/shared/pops_declined", 0)) for s in stats],
            machine_busy=busy1 - busy0,
        )

    @staticmethod
    def stats_of(log_path: Path) -> dict[str, Any]:
        text = log_path.read_text(errors="replace")
        match = STATS_RE.search(text)
        if not match:
            raise SystemExit(f"no stats in {log_path}:\n{text[-4000:]}")
        return ast.literal_eval(re.sub(r"datetime\.datetime\([^)]*\)", "None", match.group(1)))

    def check(
        self, crawl_id: str, workers: int, stats: list[dict[str, Any]], hits: dict[str, int]
    ) -> None:
        """Exactly once, by the site's count and the workers' stats; no Redis key left."""
        problems = []
        counts = {path: hits.get(path, 0) for path in self.expected}
        wrong = {path: n for path, n in counts.items() if n != 1}
        if wrong:
            problems.append(
                f"{len(wrong)} page(s) not fetched exactly once, e.g. {list(wrong.items())[:5]}"
            )
        extra = {path: n for path, n in hits.items() if path not in self.expected}
        if extra != {"/robots.txt": workers}:
            problems.append(f"unexpected hits: {dict(list(extra.items())[:5])}")
        received = sum(int(s.get("response_received_count", 0)) for s in stats)
        if received != len(self.expected) + workers:
            problems.append(f"workers received {received} responses, site has {len(self.expected)}")
        items = sum(int(s.get("item_scraped_count", 0)) for s in stats)
        if items != self.books:
            problems.append(f"{items} items for {self.books} books")
        for s in stats:
            if s.get("finish_reason") != "finished" or s.get("log_count/ERROR"):
                problems.append(
                    f"a worker ended {s.get('finish_reason')!r} with "
                    f"{s.get('log_count/ERROR', 0)} ERROR line(s)"
                )
        cleanups = sorted(str(s.get("crawlfleet/shared/cleanup")) for s in stats)
        if cleanups != sorted(["deleted"] + ["left_to_others"] * (workers - 1)):
            problems.append(f"cleanup stats {cleanups}")
        with self.redis.client() as client:
            left = [key.decode() for key in client.scan_iter(match="*", count=1000)]
        if left:
            problems.append(f"{len(left)} Redis key(s) left: {left[:5]}")
        if problems:
            raise SystemExit(f"crawl {crawl_id} failed its checks:\n  " + "\n  ".join(problems))


def describe(crawl: Crawl) -> str:
    calls = sum(crawl.redis_calls.values()) / crawl.pages
    return (
        f"{crawl.workers} worker(s): {crawl.rate:6.1f} pages/s ({crawl.pages} pages in "
        f"{crawl.seconds:5.1f} s, {crawl.wall:5.1f} s launch to exit; pages per worker "
        f"{crawl.per_worker_pages}, pops declined {crawl.per_worker_declined}); CPU per page: workers {crawl.per_page_ms(crawl.worker_cpu):.2f} ms, "
        f"redis {crawl.per_page_ms(crawl.redis_cpu):.3f} ms, site {crawl.per_page_ms(crawl.site_cpu):.3f} ms; "
        f"{calls:.2f} Redis commands per page (those inside scripts included); other "
        f"processes kept {crawl.others_cores:.2f} of the cores busy"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10000, help="URLs in the shop (about)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--per-page", type=int, default=PER_PAGE, help="books per list page (the demo's: 20)"
    )
    parser.add_argument("--workers", type=int, default=2, help="the side compared with 1 worker")
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Scrapy setting for every worker (repeatable)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="cProfile every worker into DIR"
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    books = books_for(args.pages, args.per_page)

    with tempfile.TemporaryDirectory(prefix="crawlfleet-bench-shared-") as tmp:
        bench = Bench(Path(tmp), books, args.per_page, settings, args.profile)
        print(
            f"{len(bench.expected)} pages ({books} books, {args.per_page} to a list page); "
            f"{os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        results: dict[int, list[Crawl]] = {1: [], args.workers: []}
        try:
            bench.start()
            bench.crawl(1)  # warm-up: imports and the page cache
            for round_no in range(1, args.rounds + 1):
                order = [1, args.workers] if round_no % 2 else [args.workers, 1]
                for workers in order:
                    result = bench.crawl(workers)
                    results[workers].append(result)
                    print(f"round {round_no} {describe(result)}", flush=True)
                    for command, calls in sorted(result.redis_calls.items()):
                        print(f"    redis {command:>12}: {calls / result.pages:.3f} per page")
        finally:
            bench.stop()

    one = statistics.median(c.rate for c in results[1])
    many = statistics.median(c.rate for c in results[args.workers])
    ratio = many / one
    print()
    print(f"1 worker : {one:7.1f} pages/s (median of {args.rounds})")
    print(f"{args.workers} workers: {many:7.1f} pages/s (median of {args.rounds})")
    print(f"ratio    : {ratio:.2f}  (goal >= {GOAL} on two cores)")
    print(
        f"shared crawl of {len(bench.expected)} pages: {one:.0f} pages/s with 1 worker, "
        f"{many:.0f} with {args.workers}, ratio {ratio:.2f} ({'met' if ratio >= GOAL else 'missed'}); "
        "every page fetched once, no Redis key left"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
