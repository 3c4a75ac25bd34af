"""The dashboard's run list and run page.

In-process: filters, keyset pages, query counts, live rows, the run page of a fan-out run with
each shard's node, state and progress and the totals of ``completion.progress``. Then in
Chromium against a real ``crawlfleet web``, real Scrapyd nodes and real scheduler and poller
processes: a fan-out run followed live to its end on its page, and found in the run list.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane import keyset
from controlplane.dashboard import paging
from controlplane.jobs.completion import progress
from controlplane.jobs.listing import RunFilters, run_querysets
from controlplane.jobs.models import Job
from controlplane.scheduling.models import TaskRun
from tests.fixtures.browser import confine
from tests.fixtures.dashboard import log_in, logged_in_client, screenshot
from tests.fixtures.fleet import make_task, start_run
from tests.fixtures.joblists import World

pytestmark = pytest.mark.usefixtures("cheap_passwords")


@pytest.fixture
def world(db) -> World:
    return World.build()


def run_ids(response) -> list[int]:
    return [int(i) for i in re.findall(r'id="run-row-(\d+)"', response.content.decode())]


def test_runs_are_filtered_by_task_trigger_state_and_time(client, dashboard_users, world):
    day = timezone.now() - timedelta(days=2)
    cron, _ = world.run("books-daily", Job.State.SUCCEEDED, at=day)
    manual, _ = world.run(
        "books-daily", Job.State.FAILED, at=day + timedelta(hours=1), trigger="manual"
    )
    active, _ = world.run("authors-weekly", Job.State.RUNNING, at=day + timedelta(hours=2))
    missed, _ = world.run(
        "authors-weekly", at=day + timedelta(hours=3), run_state=TaskRun.State.MISSED
    )
    logged_in_client(client, dashboard_users["viewer"])
    url = reverse("dashboard:runs")

    def ids(**query) -> list[int]:
        response = client.get(url, query)
        assert response.status_code == 200, response.content
        return run_ids(response)

    assert ids() == [missed.pk, active.pk, manual.pk, cron.pk]
    assert ids(task="books-daily") == [manual.pk, cron.pk]
    assert ids(trigger="manual") == [manual.pk]
    assert ids(state=["active", "missed"]) == [missed.pk, active.pk]
    since = (day + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    until = (day + timedelta(hours=2, minutes=30)).strftime("%Y-%m-%dT%H:%M")
    assert ids(since=since, until=until) == [active.pk, manual.pk]
    bad = client.get(url, {"trigger": "telepathy"})
    assert bad.status_code == 400
    assert 'id="trigger-error"' in bad.content.decode()


def test_run_rows_show_jobs_shards_and_items(client, dashboard_users, world):
    run, [first, _] = world.run(
        "books-daily", Job.State.FAILED, Job.State.SUCCEEDED, crawl_id="c1", items=10
    )
    world.retry(first, Job.State.RUNNING, items=5)
    logged_in_client(client, dashboard_users["viewer"])
    page = client.get(reverse("dashboard:runs")).content.decode()
    row = re.search(rf'<tr id="run-row-{run.pk}".*?</tr>', page, re.S).group(0)
    assert "3 / 2" in row  # three jobs (attempts) over two shards
    assert ">25<" in row  # a fan-out run counts every attempt: 10 + 10 + 5
    assert "1 active" in row


def test_run_pages_are_keyset_pages(client, dashboard_users, world):
    base = timezone.now() - timedelta(days=1)
    task = world.tasks["books-daily"]
    TaskRun.objects.bulk_create(
        TaskRun(task=task, scheduled_for=base + timedelta(minutes=i // 3), trigger="manual")
        for i in range(120)
    )
    expected = list(TaskRun.objects.order_by("-scheduled_for", "-pk").values_list("pk", flat=True))
    logged_in_client(client, dashboard_users["viewer"])
    seen, query = [], ""
    while query is not None:
        response = client.get(f"{reverse('dashboard:runs')}?{query}")
        seen += run_ids(response)
        match = re.search(r'href="\?([^"]*)" rel="next"', response.content.decode())
        query = match.group(1).replace("&amp;", "&") if match else None
    assert seen == expected
    middle = TaskRun.objects.get(pk=expected[60])
    deep = client.get(
        reverse("dashboard:runs"), {"cursor": paging.encode(middle.scheduled_for, middle.pk)}
    )
    assert run_ids(deep) == expected[61:111]


@pytest.mark.parametrize(
    "filters",
    [
        RunFilters(),
        RunFilters(task="books-daily"),
        RunFilters(states=["succeeded", "failed"]),
        RunFilters(trigger="cron", states=["succeeded"]),
    ],
)
def test_run_pages_read_an_index_in_order_never_sort(world, filters):
    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plans")
    cursor = paging.decode(paging.encode(timezone.now(), 10**6))
    for queryset in run_querysets(filters):
        plan = keyset.after_cursor(queryset, "scheduled_for", cursor)[:51].explain()
        # Sorting only rows that tie on the time ("RIGHT PART OF ORDER BY") streams; sorting
        # every match before the first row comes out is what a deep page cannot afford.
        assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
        assert "USING INDEX taskrun_" in plan, plan


def test_run_list_queries_do_not_grow_with_rows(client, dashboard_users, world):
    logged_in_client(client, dashboard_users["viewer"])
    world.run("books-daily", Job.State.RUNNING)
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("dashboard:runs"))
    for _ in range(15):
        _, [job, _] = world.run("authors-weekly", Job.State.FAILED, Job.State.SUCCEEDED)
        world.retry(job, Job.State.SUCCEEDED)
    with CaptureQueriesContext(connection) as many:
        response = client.get(reverse("dashboard:runs"))
    assert len(run_ids(response)) == 16
    assert len(many) == len(one)


def test_fanout_run_page_shows_each_shard_and_the_totals(client, dashboard_users, world):
    run, [a, b, c] = world.run(
        "books-daily",
        Job.State.SUCCEEDED,
        Job.State.LOST,
        Job.State.RUNNING,
        crawl_id="books-daily-abc",
        items=100,
        pages=120,
    )
    b_retry = world.retry(b, Job.State.RUNNING, items=40, pages=45, node=world.nodes[0])
    logged_in_client(client, dashboard_users["viewer"])
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("dashboard:run", args=[run.pk]))
    own = [q["sql"] for q in queries.captured_queries if "auth_" not in q["sql"]]
    own = [sql for sql in own if "django_session" not in sql]
    assert len(own) == 2, own  # the run (with its task), then every job with its node
    page = response.content.decode()
    expected = progress(TaskRun.objects.get(pk=run.pk))
    assert (expected.items, expected.pages, expected.shards) == (340, 405, 3)
    shards = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(r'<tr id="shard-(\d+)">.*?</tr>', page, re.S)
    }
    assert sorted(shards) == [0, 1, 2]
    assert "node-1" in shards[0]
    assert "succeeded" in shards[0]
    assert f'href="{reverse("dashboard:job", args=[b_retry.pk])}"' in shards[1]
    assert "node-1" in shards[1]  # its latest attempt's node
    assert "running" in shards[1]
    assert ">140<" in shards[1]  # both attempts of a shared crawl count: 100 + 40
    assert "node-3" in shards[2]
    assert "All shards" in page
    assert "340" in page
    assert "405" in page
    for job in (a, b, b_retry, c):
        assert f'id="job-row-{job.pk}"' in page
    assert 'hx-trigger="every 2s"' in page  # active: refreshed
    fragment = client.get(reverse("dashboard:run", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert fragment.content.decode().startswith('<div id="run-live"')


def test_active_run_rows_refresh(client, dashboard_users, world):
    run, [job] = world.run("books-daily", Job.State.RUNNING)
    logged_in_client(client, dashboard_users["viewer"])
    page = client.get(reverse("dashboard:runs")).content.decode()
    rows_url = f"{reverse('dashboard:run-rows')}?ids={run.pk}"
    assert f'hx-get="{rows_url}"' in page
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED, items=7)
    TaskRun.objects.filter(pk=run.pk).update(state=TaskRun.State.SUCCEEDED)
    fragment = client.get(rows_url).content.decode()
    assert f'<tr id="run-row-{run.pk}" hx-swap-oob="true">' in fragment
    assert "state-succeeded" in fragment
    assert '<div id="live-rows" hx-swap-oob="true"></div>' in fragment
    assert client.get(reverse("dashboard:run-rows"), {"ids": "x"}).status_code == 400
    assert client.get(reverse("dashboard:run", args=[10**9])).status_code == 404


@pytest.mark.browser
@pytest.mark.scrapyd
def test_a_fanout_run_is_followed_live_on_its_page(
    fleet, cp_web, cp_process, page, dashboard_users
):
    blocked = confine(page, cp_web)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    cp_process("poller")
    task = make_task(fleet, "ok", fanout=3, args={"count": "6"}, settings={"DOWNLOAD_DELAY": "0.3"})
    run = start_run(task)
    log_in(page, cp_web, dashboard_users["viewer"])
    page.goto(f"{cp_web}/runs/{run.pk}/")
    assert page.locator("#run-live").get_attribute("data-state") == "active"
    assert page.locator("table.shards tbody tr").count() == 3
    page.evaluate("window.notReloaded = true")

    cp_process("scheduler")
    page.wait_for_selector('#run-live[data-state="succeeded"]', timeout=90_000)
    assert page.evaluate("window.notReloaded") is True
    shards = page.locator("table.shards tbody tr")
    nodes = {shards.nth(i).locator("td").nth(3).inner_text() for i in range(3)}
    assert nodes == {row.name for row in fleet.rows}  # spread over the three nodes
    for i in range(3):
        assert "succeeded" in shards.nth(i).inner_text()
        assert shards.nth(i).locator("td").nth(5).inner_text() == "6"
    totals = page.locator("table.shards tfoot td")
    assert totals.nth(0).inner_text() == "18"
    assert page.locator(".tile-label:text-is('Shards') + .tile-value").inner_text() == "3 / 3"
    screenshot(page, "runs-run-fanout")

    page.goto(f"{cp_web}/runs/?task={task.name}")
    row = page.locator(f"#run-row-{run.pk}")
    assert "succeeded" in row.inner_text()
    assert "3 / 3" in row.inner_text()
    screenshot(page, "runs-list")
    assert blocked == [], blocked
    assert errors == []
