"""The job list, the overview and the REST job list over a large job table on PostgreSQL.

    .venv/bin/python bench/dashboard_at_size.py [--jobs 300000] [--days 30] [--requests 20]
                                                [--deep 200] [--explain] [--only TEXT]

The same fleet history as bench/dashboard.py (bench/dashboard_data.py: 10 nodes, 20 tasks, 30
days or ``--days``, stats dicts, progress samples), at a larger size, on a throwaway PostgreSQL
cluster, written with ``COPY`` (a million jobs in about five minutes); but only the pages whose
cost grows with the job table are measured: the overview, the job list (first page, a deep page
reached through the keyset cursor, filtered by state, spider and node) and the REST job list
(``/api/v1/jobs``: first page, the same filters, each with a deep page reached through its
``next`` links, a deep page by ``offset`` for older clients, and the exact count). Requests go
in-process through Django's test client as a logged-in admin (the REST API takes the session
too); each timed request follows one of the login page, the baseline of the same run. Reported:
p50 and p95 in ms, as multiples of the login page, and the queries of one request (``--explain``
prints the plans of each page's slowest).
Target: p95 under 200 ms for every page.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.dashboard import (  # noqa: E402
    TARGET_MS,
    explain,
    follow,
    measure,
    percentile,
    start_bench_database,
)
from bench.dashboard_data import NODES, TASKS, fill  # noqa: E402
from tests.fixtures.postgres import stop_postgres  # noqa: E402


def pages(client, data: dict, deep: int) -> list[tuple[str, str]]:
    from django.urls import reverse

    jobs, api = reverse("dashboard:jobs"), "/api/v1/jobs"
    spider, node = data["tasks"][4].spider, data["nodes"][2].name
    filters = [("state", "failed"), ("spider", spider), ("node", node)]
    listed = [("jobs", jobs)] + [(f"jobs ?{k}={v}", f"{jobs}?{k}={v}") for k, v in filters]
    result = [("overview", reverse("dashboard:overview"))]
    for label, first in listed:
        result.append((label, first))
        deepest, reached = follow(client, first, deep)
        if reached:
            result.append((f"{label}, page {reached + 1}", deepest))
    rest = [("REST jobs", api)] + [(f"REST jobs ?{k}={v}", f"{api}?{k}={v}") for k, v in filters]
    for label, first in rest:
        result.append((label, first))
        deepest, reached = follow_api(client, first, deep)
        if reached:
            result.append((f"{label}, page {reached + 1}", deepest))
    result.append((f"REST jobs ?offset={deep * 50}", f"{api}?offset={deep * 50}"))
    result.append(("REST jobs ?count=exact", f"{api}?count=exact"))
    return result


def follow_api(client, url: str, pages: int) -> tuple[str, int]:
    """The REST page reached by following up to ``pages`` ``next`` links (none: the old API)."""
    reached = 0
    for _ in range(pages):
        href = client.get(url).json().get("next")
        if not href:
            break
        url, reached = href, reached + 1
    return url, reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=30, help="days of history the jobs span")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--deep", type=int, default=200, help="job list pages to follow")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--only", default="", help="measure only pages whose label has this")
    args = parser.parse_args()

    base, server = start_bench_database()
    try:
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        data = fill(args.jobs, random.Random(7), args.days)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(
            f"filled {data['jobs']:,} jobs over {args.days} days ({data['samples'] or 0:,} progress "
            f"samples), {NODES} nodes, {TASKS} tasks in {time.perf_counter() - started:.0f} s; load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
        )
        admin, anonymous = Client(), Client()
        admin.force_login(get_user_model().objects.get(username="bench-admin"))
        print(f"\n{'page':44} {'p50 ms':>7} {'p95 ms':>7} {'p50 x':>6} {'p95 x':>6} {'queries':>7}")
        misses, floors = [], []
        for label, url in pages(admin, data, args.deep):
            if args.only not in label:
                continue
            timing = measure(admin, anonymous, url, args.requests)
            floors += timing.floor
            p50, p95 = timing.p(0.5), timing.p(0.95)
            ratios = f"{p50 / timing.p(0.5, True):6.1f} {p95 / timing.p(0.95, True):6.1f}"
            flag = "" if timing.status == 200 else f"  (HTTP {timing.status})"
            print(f"{label[:44]:44} {p50:7.1f} {p95:7.1f} {ratios} {len(timing.queries):7d}{flag}")
            if p95 >= TARGET_MS:
                misses.append(label)
            if args.explain:
                explain(timing.queries)
        print(
            f"{'login page (the baseline)':44} {percentile(floors, 0.5):7.1f} "
            f"{percentile(floors, 0.95):7.1f}"
        )
        verdict = "met by every page" if not misses else f"missed by {', '.join(misses)}"
        print(f"\ntarget p95 < {TARGET_MS:.0f} ms at {data['jobs']:,} jobs: {verdict}")
    finally:
        stop_postgres(server)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
