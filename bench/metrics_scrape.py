"""Time of one scrape of /metrics at 1,000 and at 100,000 jobs, on SQLite (the embedded setup).

    .venv/bin/python bench/metrics_scrape.py [--sizes 1000,100000] [--scrapes 20] [--explain]
                                             [--data-dir DIR]

A throwaway SQLite database is filled as bench/dashboard.py fills PostgreSQL (10 nodes, 20 tasks,
their runs and jobs over 30 days, about 10 % failed and most of those retried), plus a few
hundred observations of each telemetry histogram. /metrics is requested in-process through
Django's test client (routing, middleware, the queries, the text format), from loopback, as an
unauthenticated scrape allowed by the default policy. Reported per size: the median and the
slowest scrape in ms, and the median as a multiple of a plain ``SELECT COUNT(*)`` over the job
table measured in the same run (the floor of any figure that reads every job).
Target: a scrape over 100,000 jobs well under a second.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TARGET_MS = 1000.0


def timed(call, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def observe_some(rng: random.Random) -> None:
    from controlplane.telemetry.histograms import FIRE_TO_DISPATCH, POLL_CYCLE

    for trigger in ("cron", "manual", "api"):
        FIRE_TO_DISPATCH.observe_many([rng.expovariate(0.5) for _ in range(300)], trigger=trigger)
    for _ in range(50):
        POLL_CYCLE.observe(rng.uniform(0.05, 2.0))


def explain(statements: list[tuple[str, tuple]]) -> None:
    """Each SELECT's plan, with its real parameters (SQLite matches some indexes only so)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for sql, params in statements:
            if not sql.startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            plan = " | ".join(row[-1] for row in cursor.fetchall())
            print(f"    {sql[:90]}...\n      {plan}")


def measure(
    jobs: int, scrapes: int, show_plans: bool, data_dir: Path
) -> tuple[float, float, float]:
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from bench.dashboard_data import fill
    from controlplane.jobs.models import Job

    marker = data_dir / f"filled-{jobs}"
    if marker.exists():  # --data-dir of an earlier run, filled with this many jobs
        call_command("migrate", verbosity=0)
        print(f"{Job.objects.count()} jobs from {data_dir}")
    else:
        for other in data_dir.glob("filled-*"):
            other.unlink()
        call_command("flush", interactive=False, verbosity=0)
        rng = random.Random(7)
        started = time.perf_counter()
        made = fill(jobs, rng)
        observe_some(rng)
        print(f"{made['jobs']} jobs written in {time.perf_counter() - started:.1f}s")
        marker.touch()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    client = Client()

    def scrape() -> None:
        response = client.get("/metrics", HTTP_HOST="localhost")
        assert response.status_code == 200, response.content[:200]

    for _ in range(3):
        scrape()
        Job.objects.count()
    statements: list[tuple[str, tuple]] = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        scrape()
    print(f"  one scrape: {len(statements)} queries")
    if show_plans:
        explain(statements)
    scrape_ms = timed(scrape, scrapes)
    count_ms = timed(lambda: Job.objects.count(), scrapes)
    return statistics.median(scrape_ms), max(scrape_ms), statistics.median(count_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    parser.add_argument(
        "--data-dir", help="keep the database here; a later run with one size reuses it"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", "No directory at")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="crawlfleet-metrics-bench-")
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CRAWLFLEET_DATA_DIR": data_dir,
            "CRAWLFLEET_LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("CRAWLFLEET_DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        rows.append((size, *measure(size, args.scrapes, args.explain, Path(data_dir))))
    print(f"\n{'jobs':>8} {'scrape p50':>11} {'slowest':>9} {'COUNT(*)':>9} {'ratio':>7}")
    worst = 0.0
    for size, median, slowest, count in rows:
        print(
            f"{size:>8} {median:>9.1f}ms {slowest:>7.1f}ms {count:>7.2f}ms {median / count:>6.1f}x"
        )
        worst = max(worst, slowest)
    if len(rows) > 1:
        print(
            f"growth of the scrape from {rows[0][0]} to {rows[-1][0]} jobs: "
            f"{rows[-1][1] / rows[0][1]:.1f}x"
        )
    verdict = "within" if worst < TARGET_MS else "OVER"
    print(f"slowest scrape {worst:.0f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
