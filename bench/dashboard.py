"""Server time of the dashboard's pages over 100,000 jobs on PostgreSQL.

    .venv/bin/python bench/dashboard.py [--jobs 100000] [--requests 40] [--deep 1000]
                                        [--explain] [--only TEXT] [--keep]

A throwaway PostgreSQL cluster from Debian's packages (as the test suite runs it, on a free
loopback port, as the ``postgres`` user when run as root) is filled with bulk inserts: 10 nodes,
20 tasks, and their runs and jobs spread over 30 days (about 10 % failed, lost or timed out, most
of those retried once, a few hundred active now), written in time order as the control plane
writes them; each finished job with a Scrapy stats dict and, where the jobs app keeps them,
progress samples; an audit trail of 20,000 entries.

Pages are requested in-process through Django's test client, logged in as an admin: the figure
is the server's time (URL routing, middleware, session, queries, templates), not the network or
the WSGI server. Pages that are not installed yet (looked up by URL name) are skipped with a note.
The job list's filters are read from its own filter form, and its deep page is reached by
following its ``rel="next"`` links. Each page gets a few warm-up requests, then ``--requests``
timed ones; reported are p50 and p95 in ms, the same as a multiple of the login page measured in
the same run, one login request before each timed one (a trivial page: the floor of any request,
under the same load as the page), and the queries one request makes (``--explain`` prints the
plans of each page's slowest).
Target: p95 under 200 ms for every page.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.dashboard_data import NODES, TASKS, fill  # noqa: E402
from tests.fixtures.postgres import start_postgres, stop_postgres  # noqa: E402

TARGET_MS = 200.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


class Links(HTMLParser):
    """A page's rel=next link and its form fields: name -> the values offered (select options,
    checkbox and radio values; none for a text input)."""

    CHOICES = ("checkbox", "radio")

    def __init__(self) -> None:
        super().__init__()
        self.next: str | None = None
        self.fields: dict[str, list[str]] = {}
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name") or ""
        if tag == "a" and "next" in (attrs.get("rel") or "").split() and self.next is None:
            self.next = attrs.get("href")
        elif tag == "select" and name:
            self._select = name
            self.fields.setdefault(name, [])
        elif tag == "option" and self._select and attrs.get("value"):
            self.fields[self._select].append(attrs["value"])
        elif tag == "input" and name and attrs.get("type") not in ("hidden", "submit"):
            values = self.fields.setdefault(name, [])
            if attrs.get("type") in self.CHOICES and attrs.get("value"):
                values.append(attrs["value"])

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


def parse(response) -> Links:
    links = Links()
    links.feed(response.content.decode(errors="replace"))
    return links


@dataclass
class Timing:
    page: list[float]  # ms per request
    floor: list[float]  # the login page's, interleaved with these
    status: int
    queries: list[dict]  # of one request: sql and time

    def p(self, fraction: float, floor: bool = False) -> float:
        return percentile(self.floor if floor else self.page, fraction)


def measure(client, anonymous, url: str, count: int) -> Timing:
    """``count`` timed requests, each after one of the login page, so both see the same load."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        client.get(url)
    reset_queries()  # a request resets the log on its start; begin from an empty one
    with CaptureQueriesContext(connection) as captured:
        status = client.get(url).status_code
    queries = list(captured.captured_queries)  # the next request empties the log
    page, floor = [], []
    for _ in range(count):
        started = time.perf_counter()
        anonymous.get("/login/")
        floor.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        client.get(url)
        page.append((time.perf_counter() - started) * 1000)
    return Timing(page, floor, status, queries)


def explain(queries: list[dict], top: int = 3) -> None:
    """EXPLAIN ANALYZE of a page's slowest queries."""
    from django.db import connection

    for query in sorted(queries, key=lambda q: -float(q["time"]))[:top]:
        print(f"    -- {float(query['time']) * 1000:.1f} ms: {query['sql'][:300]}")
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN ANALYZE " + query["sql"])
            for (line,) in cursor.fetchall():
                print(f"       {line}")


def follow(client, url: str, pages: int) -> tuple[str, int]:
    """The page reached by following up to ``pages`` rel=next links, and how many were followed."""
    from urllib.parse import urljoin

    reached = 0
    for _ in range(pages):
        href = parse(client.get(url)).next
        if not href:
            break
        url, reached = urljoin(url, href), reached + 1
    return url, reached


def pages_to_measure(client, data: dict, deep: int) -> list[tuple[str, str | None]]:
    """(label, URL or None with the reason in the label) for every page there is."""
    from django.urls import NoReverseMatch, reverse

    from controlplane.jobs.models import Job

    def url(name: str, **kwargs) -> str | None:
        try:
            return reverse(name, kwargs=kwargs or None)
        except NoReverseMatch:
            return None

    pages: list[tuple[str, str | None]] = [
        ("overview", url("dashboard:overview")),
        ("overview: live part", url("dashboard:overview-live")),
        ("overview: charts 24 h", (url("dashboard:overview-charts") or "") + "?range=24h"),
        ("overview: charts 7 days", (url("dashboard:overview-charts") or "") + "?range=7d"),
        ("audit", url("dashboard:audit")),
        ("audit ?action=task", (url("dashboard:audit") or "") + "?action=task"),
        ("users", url("dashboard:users")),
        ("tokens", url("dashboard:tokens")),
    ]
    for name in ("nodes", "projects", "tasks", "runs"):
        target = url(f"dashboard:{name}")
        pages.append((name, target) if target else (f"{name}: not installed", None))
    jobs = url("dashboard:jobs")
    if jobs is None:
        pages.append(("jobs: not installed (dashboard:jobs)", None))
    else:
        form = parse(client.get(jobs)).fields
        task, node = data["tasks"][3], data["nodes"][2]
        lists = [("jobs", jobs)]
        for field, wanted in [("state", "failed"), ("task", task), ("node", node)]:
            names = (str(getattr(wanted, "pk", wanted)), getattr(wanted, "name", wanted))
            offered = form.get(field)
            value = next((o for o in offered or [] if o in names), names[1])
            note = "" if offered is not None else " (not in the filter form; guessed)"
            lists.append((f"jobs ?{field}={value}{note}", f"{jobs}?{field}={value}"))
        for label, first in lists:
            pages.append((label, first))
            deepest, reached = follow(client, first, deep)
            if reached:
                pages.append((f"{label.split(' (')[0]}, page {reached + 1}", deepest))
            else:
                pages.append((f"{label}: no rel=next link to follow", None))
    job = Job.objects.filter(state="failed", retried_by__isnull=False).order_by("-pk").first()
    for name, kwargs, label in [
        ("dashboard:job", {"job_id": job.pk if job else 0}, "job page"),
        ("dashboard:task", {"task_id": data["tasks"][0].pk}, "task page"),
    ]:
        target = url(name, **kwargs)
        pages.append((label, target) if target else (f"{label}: not installed ({name})", None))
    return pages


def start_bench_database() -> tuple[Path, Any]:
    """A throwaway PostgreSQL server with an empty ``bench`` database, and Django set up on it
    in this process (migrate is the caller's); returns the directory to remove and the server."""
    base = Path(tempfile.mkdtemp(prefix="crawlfleet-pg-"))  # not private: postgres must enter it
    server = start_postgres(base)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CRAWLFLEET_DATABASE_URL": server.create_database("bench"),
            "CRAWLFLEET_DATA_DIR": str(base / "cp"),
            "CRAWLFLEET_SECRET_KEY": "bench-only",
            "CRAWLFLEET_LOG_LEVEL": "WARNING",
            "CRAWLFLEET_ALLOWED_HOSTS": "testserver",
        }
    )
    import django

    django.setup()
    return base, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page")
    parser.add_argument("--deep", type=int, default=1000, help="job list pages to follow")
    parser.add_argument(
        "--explain", action="store_true", help="plans of each page's slowest queries"
    )
    parser.add_argument("--only", default="", help="measure only pages whose label has this")
    parser.add_argument("--keep", action="store_true", help="keep the database directory")
    args = parser.parse_args()

    base, server = start_bench_database()
    try:
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        data = fill(args.jobs, random.Random(7))
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(
            f"filled {data['jobs']:,} jobs, {NODES} nodes, {TASKS} tasks in "
            f"{time.perf_counter() - started:.0f} s (PostgreSQL {server.bin_dir.parent.name})"
        )
        samples = data["samples"]
        print(
            f"progress samples: {samples:,}"
            if samples is not None
            else "progress samples: none (the jobs app has no JobSample model)"
        )
        print(
            f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
        )

        from django.contrib.auth import get_user_model

        admin, anonymous = Client(), Client()
        admin.force_login(get_user_model().objects.get(username="bench-admin"))
        print(f"\n{'page':50} {'p50 ms':>7} {'p95 ms':>7} {'p50 x':>6} {'p95 x':>6} {'queries':>7}")
        misses, floors = [], []
        for label, url in pages_to_measure(admin, data, args.deep):
            if args.only not in label:
                continue
            if url is None:
                print(f"{label:50} skipped")
                continue
            timing = measure(admin, anonymous, url, args.requests)
            floors += timing.floor
            p50, p95 = timing.p(0.5), timing.p(0.95)
            ratio50, ratio95 = p50 / timing.p(0.5, True), p95 / timing.p(0.95, True)
            flag = "" if timing.status == 200 else f"  (HTTP {timing.status})"
            line = f"{label[:50]:50} {p50:7.1f} {p95:7.1f} {ratio50:6.1f} {ratio95:6.1f}"
            print(f"{line} {len(timing.queries):7d}{flag}")
            if p95 >= TARGET_MS:
                misses.append(label)
            if args.explain:
                explain(timing.queries)
        print(
            f"{'login page (the baseline, all runs)':50} {percentile(floors, 0.5):7.1f} "
            f"{percentile(floors, 0.95):7.1f}"
        )
        verdict = "met by every page" if not misses else f"missed by {', '.join(misses)}"
        print(f"\ntarget p95 < {TARGET_MS:.0f} ms: {verdict}")
    finally:
        stop_postgres(server)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
