"""Throughput and CPU per page of the full crawler stack against bare Scrapy, in the same run.

    .venv/bin/python bench/crawl_overhead.py [--books 5000] [--rounds 5] [--ablation] [--profile]

Both sides run the same `books` spider from the repo root with `scrapy crawl`. Bare Scrapy runs
with the project's components switched off (Scrapy's stock middlewares, no pipelines, no project
extensions). The full stack is what a production crawl on a node runs: User-Agent rotation,
validation, CSV and Kafka pipelines with a real Kafka broker, field coverage, and the report
extension with its heartbeats (at the control plane's interval, 10 s) to a real HTTP report sink.

The site is the demo bookshop pre-rendered and served from memory (bench/static_site.py):
the live demo site renders every page in Python on a thread per connection, costing about as
much CPU per page as the crawl's own parsing, which hides the stack's cost on two cores
(`--site demo` measures it that way).

The runs alternate so that machine noise hits both alike. Two figures: the ratio of median pages
per second (target: 0.97 or more), and the ratio of CPU per page (the crawl process's CPU between
spider open and close, every thread; steadier than pages/s on a shared machine). `--ablation`
adds one run per round of the full stack minus each component; `--profile` runs the full stack
once under cProfile and prints the time spent in each of the project's components.
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
CPU_METER = {"bench.cpu_meter.CpuMeter": 990}
STOCK_OFF = {
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.remote_control.RemoteControl": None,
}
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def crawl(start_url: str, settings: dict[str, str], site_pid: int, prefix: list[str]) -> dict:
    argv = [*prefix, SCRAPY, "crawl", "books", "-a", f"start_url={start_url}"]
    for key, value in settings.items():
        argv += ["-s", f"{key}={value}"]
    site_before = process_cpu(site_pid)
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    site_cpu = process_cpu(site_pid) - site_before
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
        "cpu_ms": 1000 * stats["bench/cpu_seconds"] / pages,
        "site_ms": 1000 * site_cpu / pages,
        "stats": stats,
    }


def variants(full: dict[str, str]) -> dict[str, dict[str, str]]:
    """The full stack minus one component at a time."""
    from crawler import settings as project

    no_validation = {k: v for k, v in project.ITEM_PIPELINES.items() if "Validation" not in k}
    return {
        "-useragent": {**full, "DOWNLOADER_MIDDLEWARES": "{}"},
        "-validation": {**full, "ITEM_PIPELINES": json.dumps(no_validation)},
        "-csv": {**full, "CRAWLFLEET_CSV_DIR": ""},
        "-kafka": {**full, "KAFKA_BOOTSTRAP_SERVERS": ""},
        "-report": {k: v for k, v in full.items() if k != "CRAWLFLEET_REPORT_URL"},
        "-coverage": {**full, "CRAWLFLEET_FIELD_COVERAGE_ENABLED": "False"},
    }


def start_site(kind: str, books: int, workdir: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    module = ["bench/static_site.py"] if kind == "prerendered" else ["-m", "demo.bookshop"]
    argv = [sys.executable, *module, "--port", str(port), "--books", str(books)]
    site = ManagedProcess("site", argv, log_path=workdir / "site.log", cwd=REPO_ROOT).start()
    site.wait_for_port(port, timeout=120)
    return site, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--books", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="heartbeat interval, s")
    parser.add_argument("--site", choices=("prerendered", "demo"), default="prerendered")
    parser.add_argument("--ablation", action="store_true", help="also full minus each component")
    parser.add_argument("--profile", action="store_true", help="cProfile one full-stack run")
    parser.add_argument("--profile-out", type=Path, help="keep the profile in this file")
    args = parser.parse_args()

    from crawler import settings as project
    from tests.fixtures.kafka import KafkaBroker
    from tests.fixtures.reportsink import ReportSink

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="crawlfleet-bench-") as tmp, ReportSink() as sink:
        workdir = Path(tmp)
        site, port = start_site(args.site, args.books, workdir)
        broker = None
        try:
            broker = KafkaBroker(workdir / "kafka").start()
            start_url = f"http://127.0.0.1:{port}/catalogue/page-1.html"
            common = {"LOG_LEVEL": "INFO", "CRAWLFLEET_CSV_DIR": str(workdir / "csv")}
            bare = {
                **common,
                "DOWNLOADER_MIDDLEWARES": "{}",
                "ITEM_PIPELINES": "{}",
                "ITEM_PIPELINES_BASE": "{}",
                "EXTENSIONS": json.dumps({**STOCK_OFF, **CPU_METER}),
            }
            full = {
                **common,
                "EXTENSIONS": json.dumps({**project.EXTENSIONS, **CPU_METER}),
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "KAFKA_TOPIC": "bench.items",
                **sink.settings(interval=args.heartbeat),
            }
            sides = {"bare": bare, "full": full}
            if args.ablation:
                sides.update(variants(full))
            for settings in (bare, full):  # warm-up: page cache, the broker's JIT, the topic
                crawl(start_url, settings, site.pid, [])
            for round_no in range(1, args.rounds + 1):
                for name, settings in sides.items():
                    result = crawl(start_url, settings, site.pid, [])
                    results.setdefault(name, []).append(result)
                    print(
                        f"round {round_no} {name:>11}: {result['pages']} pages, "
                        f"{result['items']} items, {result['rate']:6.1f} pages/s, "
                        f"{result['cpu_ms']:.3f} ms CPU/page (site {result['site_ms']:.3f})",
                        flush=True,
                    )
            if args.profile:
                profile_path = args.profile_out or workdir / "full.prof"
                crawl(
                    start_url,
                    full,
                    site.pid,
                    [sys.executable, "-m", "cProfile", "-o", str(profile_path)],
                )
                from crawl_profile import component_table

                print()
                print(component_table(profile_path))
            reports = len(sink.events("heartbeat"))
        finally:
            if broker is not None:
                broker.stop()
            site.stop()
    summarise(results, args.rounds, reports)


def summarise(results: dict[str, list[dict]], rounds: int, heartbeats: int) -> None:
    bare, full = results["bare"], results["full"]
    bare_rate = statistics.median(r["rate"] for r in bare)
    full_rate = statistics.median(r["rate"] for r in full)
    bare_cpu = statistics.median(r["cpu_ms"] for r in bare)
    full_cpu = statistics.median(r["cpu_ms"] for r in full)
    per_round = [f["rate"] / b["rate"] for b, f in zip(bare, full, strict=True)]
    cpu_round = [b["cpu_ms"] / f["cpu_ms"] for b, f in zip(bare, full, strict=True)]
    print()
    print(f"{'side':>11}  pages/s (median, min-max)  ms CPU/page (median, min-max)")
    for name, runs in results.items():
        rates = [r["rate"] for r in runs]
        cpus = [r["cpu_ms"] for r in runs]
        print(
            f"{name:>11}  {statistics.median(rates):7.1f} ({min(rates):.1f}-{max(rates):.1f})"
            f"      {statistics.median(cpus):.3f} ({min(cpus):.3f}-{max(cpus):.3f})"
            f"  extra CPU/page vs bare: {statistics.median(cpus) - bare_cpu:+.3f} ms"
        )
    print(f"site CPU/page: {statistics.median(r['site_ms'] for r in bare + full):.3f} ms")
    print(f"heartbeats received by the report sink: {heartbeats}")
    last = full[-1]["stats"]
    print(
        f"kafka delivered: {last.get('kafka/items_delivered')} of {last.get('item_scraped_count')}"
    )
    print(
        f"ratio pages/s: {full_rate / bare_rate:.3f} (per round {min(per_round):.3f}-{max(per_round):.3f}); "
        f"ratio CPU/page bare/full: {bare_cpu / full_cpu:.3f} "
        f"(per round {min(cpu_round):.3f}-{max(cpu_round):.3f}); median of {rounds}; target >= 0.97"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
