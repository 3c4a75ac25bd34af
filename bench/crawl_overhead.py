"""Throughput of the full crawler stack against bare Scrapy, in the same run, on the same site.

    .venv/bin/python bench/crawl_overhead.py [--books 2000] [--rounds 3]

Both sides run the same `books` spider from the repo root with `scrapy crawl`. Bare Scrapy runs
with the project's components switched off (Scrapy's stock middlewares, no pipelines). The full
stack adds User-Agent rotation, validation, CSV and Kafka pipelines, with a real Kafka broker.
The runs alternate so that machine noise hits both alike. The figure that matters is the ratio of
median pages per second (target: 0.90 or more).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from controlplane.lib.procutil import ManagedProcess, free_port  # noqa: E402

SCRAPY = str(Path(sys.executable).parent / "scrapy")
STATS_RE = re.compile(r"Dumping Scrapy stats:\n(\{.*?\})\n", re.S)


def crawl(start_url: str, settings: dict[str, str], workdir: Path) -> dict:
    argv = [SCRAPY, "crawl", "books", "-a", f"start_url={start_url}"]
    for key, value in settings.items():
        argv += ["-s", f"{key}={value}"]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    match = STATS_RE.search(proc.stderr)
    if proc.returncode != 0 or not match:
        raise SystemExit(f"crawl failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    text = re.sub(r"datetime\.datetime\([^)]*\)", "None", match.group(1))
    stats = ast.literal_eval(text)
    pages = stats["response_received_count"]
    return {
        "pages": pages,
        "items": stats.get("item_scraped_count", 0),
        "rate": pages / stats["elapsed_time_seconds"],
        "stats": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true", help="leave Kafka out of the full stack")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crawlfleet-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        site = ManagedProcess(
            "demosite",
            [
                sys.executable,
                "-m",
                "demo.bookshop",
                "--port",
                str(port),
                "--books",
                str(args.books),
            ],
            log_path=workdir / "demosite.log",
            cwd=REPO_ROOT,
        ).start()
        broker = None
        try:
            site.wait_for_port(port)
            start_url = f"http://127.0.0.1:{port}/catalogue/page-1.html"
            common = {"LOG_LEVEL": "INFO", "CRAWLFLEET_CSV_DIR": str(workdir / "csv")}
            bare = {
                **common,
                "DOWNLOADER_MIDDLEWARES": "{}",
                "ITEM_PIPELINES": "{}",
                "EXTENSIONS": json.dumps(
                    {
                        "scrapy.extensions.telnet.TelnetConsole": None,
                        "scrapy.extensions.remote_control.RemoteControl": None,
                    }
                ),
            }
            full = dict(common)
            if not args.no_kafka:
                from tests.fixtures.kafka import KafkaBroker

                broker = KafkaBroker(workdir / "kafka").start()
                full["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
                full["KAFKA_TOPIC"] = "bench.items"

            crawl(start_url, bare, workdir)  # warm-up: imports, page cache, JIT of the broker
            crawl(start_url, full, workdir)
            results: dict[str, list[dict]] = {"bare": [], "full": []}
            for round_no in range(1, args.rounds + 1):
                for name, settings in (("bare", bare), ("full", full)):
                    result = crawl(start_url, settings, workdir)
                    results[name].append(result)
                    print(
                        f"round {round_no} {name:>4}: {result['pages']} pages, {result['items']} items, {result['rate']:.1f} pages/s",
                        flush=True,
                    )
        finally:
            if broker is not None:
                broker.stop()
            site.stop()

    bare_rate = statistics.median(r["rate"] for r in results["bare"])
    full_rate = statistics.median(r["rate"] for r in results["full"])
    full_stats = results["full"][-1]["stats"]
    print()
    print(f"bare Scrapy     : {bare_rate:7.1f} pages/s (median of {args.rounds})")
    print(f"crawlfleet stack: {full_rate:7.1f} pages/s (median of {args.rounds})")
    print(f"ratio           : {full_rate / bare_rate:.3f}  (target >= 0.90)")
    if not args.no_kafka:
        print(
            f"kafka delivered : {full_stats.get('kafka/items_delivered')} of {full_stats.get('item_scraped_count')} items"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
