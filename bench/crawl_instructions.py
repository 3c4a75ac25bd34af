"""Instructions per page of the full crawler stack against bare Scrapy, counted by callgrind.

    .venv/bin/python bench/crawl_instructions.py [--books 300,900] [--ablation] [--keep DIR]

The same crawls as `bench/crawl_overhead.py` (the `books` spider, bare Scrapy against the full
stack with a real Kafka broker and report sink, the pre-rendered shop), each run under valgrind's
callgrind, which counts the instructions the crawl process executes, in every thread. A count
does not move with the machine's speed, so it can tell a 1 % difference apart on a VM whose
pages/s drift by a third between two crawls. Needs `valgrind` (Debian's package).

Each side crawls two shops of different sizes; the difference of the two counts divided by the
difference in pages is the cost of one page, start-up and imports cancelled out. The figure is
bare / full (1.0: the stack costs nothing). `--ablation` adds the full stack minus each
component. Callgrind runs a crawl ~50x slower, so wall-clock timers fire ~50x more often per
page: the heartbeat, stats-flush and Kafka report-poll intervals are stretched by that factor.
Two crawls run at a time, one per core, so that the slowdown stays near that factor.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from shutil import which

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from crawl_overhead import SCRAPY, STATS_RE, STOCK_OFF, start_site, variants  # noqa: E402

SLOWDOWN = 50  # roughly how much slower a crawl runs under callgrind
COLLECTED_RE = re.compile(r"Collected : (\d+)")


def launch(url: str, settings: dict[str, str], out: Path) -> subprocess.Popen:
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", SCRAPY, "crawl"]
    argv += ["books", "-a", f"start_url={url}"]
    for key, value in settings.items():
        argv += ["-s", f"{key}={value}"]
    return subprocess.Popen(
        argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def counted(proc: subprocess.Popen) -> tuple[int, int, int]:
    """(instructions, pages, items) of a finished crawl."""
    stderr = proc.communicate()[1]
    instructions, stats = COLLECTED_RE.search(stderr), STATS_RE.search(stderr)
    if proc.returncode != 0 or not instructions or not stats:
        raise SystemExit(f"crawl failed ({proc.returncode}):\n{stderr[-3000:]}")
    pages = int(re.search(r"'response_received_count': (\d+)", stats.group(1)).group(1))
    items = re.search(r"'item_scraped_count': (\d+)", stats.group(1))
    return int(instructions.group(1)), pages, int(items.group(1)) if items else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", default="300,900", help="the two shop sizes, small,large")
    parser.add_argument("--ablation", action="store_true", help="also full minus each component")
    parser.add_argument("--keep", type=Path, help="keep the callgrind files in this directory")
    parser.add_argument("--jobs", type=int, default=2, help="crawls at a time (one per core)")
    args = parser.parse_args()
    small, large = (int(n) for n in args.books.split(","))
    if which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")

    from crawler import settings as project
    from tests.fixtures.kafka import KafkaBroker
    from tests.fixtures.reportsink import ReportSink

    with tempfile.TemporaryDirectory(prefix="crawlfleet-bench-") as tmp, ReportSink() as sink:
        workdir = Path(tmp)
        out_dir = args.keep or workdir
        out_dir.mkdir(parents=True, exist_ok=True)
        sites, broker, procs = [], None, {}
        try:
            broker = KafkaBroker(workdir / "kafka").start()
            common = {
                "LOG_LEVEL": "INFO",
                "CRAWLFLEET_CSV_DIR": str(workdir / "csv"),
                # Stretched like the crawl itself: no timeout may fire that would not otherwise.
                "KAFKA_STARTUP_TIMEOUT": "300",
                "DOWNLOAD_TIMEOUT": "600",
                "KAFKA_DELIVERY_TIMEOUT": "600",
                "CRAWLFLEET_STATS_FLUSH_INTERVAL": str(5 * SLOWDOWN),
                "KAFKA_POLL_INTERVAL": str(0.1 * SLOWDOWN),
            }
            bare = {
                **common,
                "DOWNLOADER_MIDDLEWARES": "{}",
                "ITEM_PIPELINES": "{}",
                "ITEM_PIPELINES_BASE": "{}",
                "EXTENSIONS": json.dumps(STOCK_OFF),
            }
            full = {
                **common,
                "EXTENSIONS": json.dumps(project.EXTENSIONS),
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "KAFKA_TOPIC": "bench.instructions",
                **sink.settings(interval=10.0 * SLOWDOWN),
            }
            sides = {"bare": bare, "full": full}
            if args.ablation:
                sides.update(variants(full))
            queue = []
            for books in (small, large):
                site, port = start_site("prerendered", books, workdir)
                sites.append(site)
                url = f"http://127.0.0.1:{port}/catalogue/page-1.html"
                for name, settings in sides.items():
                    out = out_dir / f"callgrind.{name.strip('-')}.{books}"
                    queue.append(((name, books), url, settings, out))
            counts = {}
            while queue or procs:
                while queue and len(procs) < args.jobs:
                    key, url, settings, out = queue.pop(0)
                    procs[key] = launch(url, settings, out)
                done = next((key for key, proc in procs.items() if proc.poll() is not None), None)
                if done is None:
                    time.sleep(0.5)
                    continue
                counts[done] = counted(procs.pop(done))
                print(f"{done[0]:>11} {done[1]}: {counts[done][0]:,} instructions", flush=True)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
            if broker is not None:
                broker.stop()
            for site in sites:
                site.stop()
    report(counts, list(sides), small, large)


def report(counts: dict, sides: list[str], small: int, large: int) -> None:
    per_page = {}
    print(f"{'side':>11}  instructions ({small} / {large} books)  pages  per page")
    for name in sides:
        (i_small, p_small, _), (i_large, p_large, items) = counts[name, small], counts[name, large]
        per_page[name] = (i_large - i_small) / (p_large - p_small)
        print(
            f"{name:>11}  {i_small:,} / {i_large:,}  {p_small}/{p_large} ({items} items)"
            f"  {per_page[name]:,.0f}"
        )
    bare = per_page["bare"]
    print()
    for name in sides[1:]:
        extra = per_page[name] - bare
        print(f"{name:>11}: bare/this {bare / per_page[name]:.4f}, {extra:+,.0f} per page")
    print(
        f"ratio instructions per page bare/full: {bare / per_page['full']:.4f} "
        f"({per_page['full'] - bare:+,.0f} per page over {bare:,.0f}); target >= 0.97"
    )


if __name__ == "__main__":
    main()
