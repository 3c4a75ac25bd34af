"""The overview: its figures match the database, its parts refresh alone, and in a real browser
every dashboard page renders from the control plane alone, without a script error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from controlplane.deploys.models import Project, Version
from controlplane.jobs import fleetstats
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.browser import confine
from tests.fixtures.dashboard import Login, log_in, logged_in_client, screenshot

S = Job.State


@dataclass
class Fleet:
    """A known fleet: nodes, tasks and jobs whose overview figures are worked out by hand."""

    nodes: dict[str, Node]
    tasks: dict[str, Task]
    now: datetime
    finished: dict[str, list[Job]] = field(default_factory=dict)


def make_job(run: TaskRun, project: Project, state: str, **fields) -> Job:
    job = Job.objects.create(
        run=run, project=project, spider="books", version=project.current_version, state=state
    )
    if fields:
        Job.objects.filter(pk=job.pk).update(**fields)
        job.refresh_from_db()
    return job


def build_fleet() -> Fleet:
    now = timezone.now()
    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="100", egg=b"egg", sha256="0" * 64, size=3, spiders=["books"]
    )
    project.current_version = version
    project.save()
    nodes = {
        "alpha": Node.objects.create(
            name="alpha", url="http://127.0.0.1:7001", capacity=4, state="up"
        ),
        "beta": Node.objects.create(
            name="beta", url="http://127.0.0.1:7002", capacity=2, state="degraded"
        ),
        "gamma": Node.objects.create(
            name="gamma", url="http://127.0.0.1:7003", capacity=8, state="down"
        ),
        "delta": Node.objects.create(
            name="delta", url="http://127.0.0.1:7004", capacity=3, state="up", enabled=False
        ),
    }
    tasks = {
        "hourly": Task.objects.create(
            name="hourly", project=project, spider="books", cron="0 * * * *"
        ),
        "minutely": Task.objects.create(
            name="minutely", project=project, spider="books", cron="* * * * *"
        ),
        "paris-daily": Task.objects.create(
            name="paris-daily",
            project=project,
            spider="books",
            cron="30 6 * * *",
            timezone="Europe/Paris",
        ),
        "off": Task.objects.create(
            name="off", project=project, spider="books", cron="* * * * *", enabled=False
        ),
    }
    run = TaskRun.objects.create(task=tasks["hourly"], scheduled_for=now)
    alpha, beta, gamma = nodes["alpha"], nodes["beta"], nodes["gamma"]
    # Active: alpha has 4 on it, beta 2 (one a retry), gamma 1 (down, so not counted in use).
    make_job(run, project, S.QUEUED)
    make_job(run, project, S.QUEUED, not_before=now + timedelta(minutes=5), attempt=2)
    make_job(run, project, S.DISPATCHING, node=alpha)
    make_job(run, project, S.PENDING, node=alpha)
    make_job(run, project, S.RUNNING, node=alpha)
    make_job(run, project, S.RUNNING, node=alpha)
    make_job(run, project, S.RUNNING, node=beta)
    make_job(run, project, S.RUNNING, node=beta, attempt=2)
    make_job(run, project, S.RUNNING, node=gamma)
    finished = {}

    def ended(state: str, ago: timedelta, **fields) -> Job:
        job = make_job(run, project, state, node=alpha, finished_at=now - ago, **fields)
        finished.setdefault(state, []).append(job)
        return job

    hours = timedelta(hours=1)
    ended(S.SUCCEEDED, 1 * hours, items=100, pages=120, errors=0)
    ended(S.SUCCEEDED, 1 * hours, items=50, pages=60, errors=1)
    ended(S.SUCCEEDED, 5 * hours, items=10, pages=11, errors=0, attempt=2)
    ended(S.FAILED, 2 * hours, items=1, pages=3, errors=7)
    ended(S.FAILED, 20 * hours, errors=2)
    ended(S.LOST, 3 * hours, attempt=2)
    ended(S.TIMED_OUT, 4 * hours, items=5, pages=5)
    ended(S.CANCELLED, 6 * hours)
    # Outside the last 24 hours: in the 7-day chart only, or in nothing.
    ended(S.FAILED, timedelta(days=2), items=9, pages=9, errors=9)
    ended(S.SUCCEEDED, timedelta(days=2, hours=3), items=4, pages=4)
    ended(S.SUCCEEDED, timedelta(days=9), items=1000, pages=1000)
    return Fleet(nodes=nodes, tasks=tasks, now=now, finished=finished)


@pytest.fixture
def fleet(transactional_db) -> Fleet:
    return build_fleet()


def test_fleet_health_counts_nodes_and_their_load_from_the_database(fleet):
    health = fleetstats.fleet_health()
    assert health.summary.states == {"up": 1, "degraded": 1, "down": 1, "unknown": 0}
    assert health.summary.disabled == 1
    loads = {row.node.name: (row.load, row.capacity) for row in health.nodes}
    assert loads == {"alpha": (4, 4), "beta": (2, 2), "gamma": (1, 8), "delta": (0, 3)}
    # Down first, then degraded, then up; disabled last among equals.
    assert [row.node.name for row in health.nodes] == ["gamma", "beta", "alpha", "delta"]
    assert (health.summary.load, health.summary.capacity) == (6, 6)  # schedulable: alpha and beta


def test_jobs_now_and_the_last_24_hours(fleet):
    jobs, day = fleetstats.job_figures()
    assert jobs == {
        "queued": 2,
        "dispatching": 1,
        "pending": 1,
        "running": 5,
        "backoff": 1,
        "retrying": 2,
    }
    assert day == {
        "ended": 8,
        "succeeded": 3,
        "degraded": 0,
        "failed": 2,
        "lost": 1,
        "timed_out": 1,
        "cancelled": 1,
        "failures": 4,
        "retries": 2,
        "retries_succeeded": 1,
        "items": 166,
        "pages": 199,
        "errors": 10,
    }


def _bucket_of(moment: datetime, span: str) -> datetime:
    moment = moment.astimezone(UTC)
    if span == "24h":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.mark.parametrize("span", ["24h", "7d"])
def test_chart_series_match_the_database_bucket_by_bucket(fleet, span):
    data = fleetstats.series(span)
    assert len(data.buckets) == (24 if span == "24h" else 7)
    expected: dict[tuple[datetime, str], int] = {}
    items: dict[datetime, int] = {}
    for job in Job.objects.filter(finished_at__gte=data.buckets[0]):
        key = _bucket_of(job.finished_at, span)
        expected[key, job.state] = expected.get((key, job.state), 0) + 1
        items[key] = items.get(key, 0) + job.items
    got = {
        (bucket, state): counts[position]
        for state, counts in data.outcomes.items()
        for position, bucket in enumerate(data.buckets)
        if counts[position]
    }
    assert got == expected
    assert {b: n for b, n in zip(data.buckets, data.items, strict=True) if n} == {
        b: n for b, n in items.items() if n
    }
    total = sum(sum(counts) for counts in data.outcomes.values())
    assert total == (8 if span == "24h" else 10)


def test_next_fires_are_the_soonest_enabled_tasks(fleet):
    from controlplane.scheduling.upcoming import next_fires

    fires = next_fires(3)
    names = [fire.task.name for fire in fires]
    assert "off" not in names
    assert names[0] == "minutely"
    expected = sorted(
        (task.next_runs(1)[0].astimezone(UTC), task.name)
        for task in Task.objects.filter(enabled=True)
    )
    assert [(fire.utc, fire.task.name) for fire in fires] == expected[:3]
    assert next_fires(3) == fires  # remembered until they pass


def test_the_page_shows_the_figures_and_charts(client, dashboard_users, fleet):
    logged_in_client(client, dashboard_users["viewer"])
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 200
    html = response.content.decode()
    context = response.context
    assert context["jobs"]["running"] == 5
    assert context["day"]["failures"] == 4
    for tile, value in [("nodes", "1"), ("running", "5"), ("queued", "2"), ("failures", "4")]:
        start = html.index(f'data-tile="{tile}"')
        assert f'<span class="tile-value">{value}' in html[start : start + 600], tile
    assert 'hx-trigger="every 5s"' in html
    assert 'hx-trigger="every 60s"' in html
    outcomes = json.loads(context["outcomes_json"])
    assert outcomes["type"] == "bar"
    assert sum(sum(d["data"]) for d in outcomes["datasets"]) == 8
    assert "minutely" in html
    assert ">off<" not in html
    week = client.get(reverse("dashboard:overview") + "?range=7d")
    assert sum(sum(d["data"]) for d in json.loads(week.context["outcomes_json"])["datasets"]) == 10


def test_live_parts_are_fragments_and_an_ended_session_reloads_the_page(
    client, dashboard_users, fleet
):
    logged_in_client(client, dashboard_users["viewer"])
    live = client.get(reverse("dashboard:overview-live"), HTTP_HX_REQUEST="true")
    assert live.status_code == 200
    assert b"<html" not in live.content
    assert b'id="overview-live"' in live.content
    charts = client.get(reverse("dashboard:overview-charts") + "?range=7d", HTTP_HX_REQUEST="true")
    assert b'id="overview-charts"' in charts.content
    assert b"last 7 days" in charts.content
    client.logout()
    ended = client.get(reverse("dashboard:overview-live"), HTTP_HX_REQUEST="true")
    assert ended.status_code == 401
    assert ended["HX-Redirect"] == f"{reverse('dashboard:login')}?next=/"
    assert client.get(reverse("dashboard:overview-live")).status_code == 302


def test_the_page_costs_the_same_queries_however_many_jobs(
    client, dashboard_users, fleet, django_assert_max_num_queries
):
    logged_in_client(client, dashboard_users["viewer"])
    client.get(reverse("dashboard:overview"))  # warm the next-fire memory
    run = TaskRun.objects.first()
    project = Project.objects.get()
    Job.objects.bulk_create(
        Job(
            run=run,
            project=project,
            spider="books",
            version=project.current_version,
            state=S.SUCCEEDED,
            finished_at=fleet.now - timedelta(minutes=m),
            node=fleet.nodes["beta"],
        )
        for m in range(300)
    )
    # 13: the jobs now and the jobs of the last day are two queries, each on its own index.
    with django_assert_max_num_queries(13):
        assert client.get(reverse("dashboard:overview")).status_code == 200


# --- in a real browser ---------------------------------------------------------------------------
CHART_DRAWN = """id => {
    const canvas = document.getElementById(id);
    const chart = canvas && window.Chart && Chart.getChart(canvas);
    return !!chart && chart.data.datasets.length > 0 && canvas.width > 0 && canvas.height > 0;
}"""


@pytest.mark.browser
def test_admin_sees_the_overview_audit_and_users_then_an_operator_logs_in(
    cp_web, page, dashboard_users, fleet
):
    blocked = confine(page, cp_web)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, cp_web, dashboard_users["admin"])

    page.wait_for_function(CHART_DRAWN, arg="chart-outcomes")
    page.wait_for_function(CHART_DRAWN, arg="chart-volume")
    assert page.locator('[data-tile="running"] .tile-value').inner_text() == "5"
    expect(page.locator("tr[data-node]")).to_have_count(4)
    screenshot(page, "overview")
    page.click("#overview-charts .segmented a:has-text('7 days')")
    page.wait_for_selector("#overview-charts h2:has-text('last 7 days')")
    page.wait_for_function(CHART_DRAWN, arg="chart-outcomes")
    assert page.url.endswith("/?range=7d")
    screenshot(page, "overview-7d")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{cp_web}/")
    page.wait_for_function(CHART_DRAWN, arg="chart-volume")
    screenshot(page, "overview-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.click(".topnav a:has-text('Audit')")
    row = page.locator("table.audit tbody tr").first
    assert "login" in row.inner_text()
    assert dashboard_users["admin"].username in row.inner_text()
    screenshot(page, "audit")

    page.click(".topnav a:has-text('Users')")
    expect(page.locator("table tbody tr")).to_have_count(3)
    screenshot(page, "users")
    page.click("text=New user")
    page.fill("input[name=username]", "night-shift")
    page.select_option("select[name=role]", "operator")
    page.fill("input[name=password]", "short")
    page.fill("input[name=password2]", "short")
    page.click("button:has-text('Create user')")
    assert "too short" in page.locator("#password-error").inner_text()
    screenshot(page, "users-new-error")
    page.fill("input[name=password]", "a-long-enough-passphrase")
    page.fill("input[name=password2]", "a-long-enough-passphrase")
    page.click("button:has-text('Create user')")
    page.wait_for_selector("h1:has-text('night-shift')")
    screenshot(page, "users-user")

    page.click(".subnav a:has-text('API tokens')")
    page.fill("input[name=name]", "ci-deploy")
    page.click("button:has-text('Create token')")
    secret = page.input_value("#token-secret")
    assert secret.startswith("cf_")
    screenshot(page, "tokens-created")
    page.goto(f"{cp_web}/accounts/tokens/")  # the same page again: the secret is gone
    expect(page.locator("tr:has-text('ci-deploy')")).to_have_count(1)
    assert secret not in page.content()

    page.click(".user-menu button:has-text('Log out')")
    page.wait_for_url(f"{cp_web}/login/")
    log_in(page, cp_web, Login("night-shift", "a-long-enough-passphrase", "operator"))
    assert "(operator)" in page.locator(".user-menu").inner_text()
    expect(page.locator(".topnav a:has-text('Users')")).to_have_count(0)
    assert blocked == []
    assert errors == []


def _dashboard_link(href: str, origin: str) -> str | None:
    """The path of a same-origin dashboard page (not the admin, API, static files or logout)."""
    url = urlsplit(href)
    if url.scheme not in ("http", "https") or f"{url.scheme}://{url.netloc}" != origin:
        return None
    skip = ("/admin/", "/api/", "/static/", "/logout/", "/login/")
    return None if url.path.startswith(skip) else url.path


@pytest.mark.browser
def test_every_dashboard_page_loads_only_from_the_control_plane(
    cp_web, page, dashboard_users, fleet
):
    """Every page reachable from the nav (and their links, a few levels deep) as an admin."""
    from controlplane.accounts import audit

    someone = audit.Actor("user", "alice", "operator", ip="10.0.0.7")
    audit.record(
        someone,
        "task.update",
        "hourly",
        changes={"cron": ["*/5 * * * *", "0 * * * *"], "enabled": [False, True]},
    )
    audit.record(someone, "task.create", "minutely", fields={f"field_{i}": i for i in range(8)})
    blocked = confine(page, cp_web)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    log_in(page, cp_web, dashboard_users["admin"])
    nav = page.eval_on_selector_all(".topnav a", "links => links.map(a => a.href)")
    queue = [p for p in (_dashboard_link(h, cp_web) for h in nav) if p]
    seen: set[str] = set()
    kinds: dict[str, int] = {}  # /jobs/17/ and /jobs/18/ are one kind of page: two of each do
    while queue and len(seen) < 80:
        path = queue.pop(0)
        kind = re.sub(r"\d+", "N", path)
        if path in seen or kinds.get(kind, 0) >= 2:
            continue
        seen.add(path)
        kinds[kind] = kinds.get(kind, 0) + 1
        response = page.goto(f"{cp_web}{path}", wait_until="networkidle")
        assert response.status < 400, (path, response.status)
        links = page.eval_on_selector_all("main a[href]", "links => links.map(a => a.href)")
        queue += [p for p in (_dashboard_link(h, cp_web) for h in links) if p and p not in seen]
        screenshot(page, f"page{path.rstrip('/').replace('/', '-') or '-overview'}")
    assert len(seen) >= 8, seen
    assert blocked == [], f"pages loaded from outside the control plane: {blocked}"
    assert errors == []
