"""The dashboard's job list and job page, in-process.

Filters and keyset pages (ties included, deep pages, no sort in any query plan), query counts,
live rows, the attempt chain, the stats table and the progress chart, and who may cancel and
retry (viewers see no buttons and their forged posts are refused; operators' actions are
audited). The log proxy is in test_dashboard_jobs_logs.py; the pages in a real browser with real
nodes in test_dashboard_jobs_browser.py.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane import keyset
from controlplane.accounts.models import AuditEntry
from controlplane.dashboard import paging
from controlplane.jobs.listing import JobFilters, job_querysets
from controlplane.jobs.models import Job, JobSample
from tests.fixtures.dashboard import logged_in_client
from tests.fixtures.joblists import World

pytestmark = pytest.mark.usefixtures("cheap_passwords")


@pytest.fixture
def world(db) -> World:
    return World.build()


def row_ids(response) -> list[int]:
    return [int(i) for i in re.findall(r'id="job-row-(\d+)"', response.content.decode())]


def next_link(response) -> str | None:
    match = re.search(r'href="\?([^"]*)" rel="next"', response.content.decode())
    return match.group(1).replace("&amp;", "&") if match else None


# --- the list -----------------------------------------------------------------------------------
def test_filters_by_task_spider_node_states_and_time(client, dashboard_users, world):
    day = timezone.now() - timedelta(days=3)
    _, [old_books] = world.run("books-daily", Job.State.SUCCEEDED, at=day)
    _, [failed_books] = world.run(
        "books-daily", Job.State.FAILED, at=day + timedelta(hours=2), reason="boom " * 40
    )
    _, [running_authors] = world.run(
        "authors-weekly", Job.State.RUNNING, at=day + timedelta(hours=4), node=world.nodes[1]
    )
    _, [lost_adhoc] = world.run(None, Job.State.LOST, at=day + timedelta(hours=6))
    logged_in_client(client, dashboard_users["viewer"])
    url = reverse("dashboard:jobs")

    def ids(**query) -> list[int]:
        response = client.get(url, query)
        assert response.status_code == 200, response.content
        return row_ids(response)

    assert ids() == [lost_adhoc.pk, running_authors.pk, failed_books.pk, old_books.pk]
    assert ids(task="books-daily") == [failed_books.pk, old_books.pk]
    assert ids(spider="authors") == [running_authors.pk]
    assert ids(node="node-2") == [running_authors.pk]
    assert ids(state=["failed", "lost"]) == [lost_adhoc.pk, failed_books.pk]
    assert ids(state=["running"], node="node-2") == [running_authors.pk]
    window = {"since": (day + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")}
    window["until"] = (day + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M")
    assert ids(**window) == [running_authors.pk, failed_books.pk]
    assert ids(task="no-such-task") == []

    page = client.get(url, {"state": ["failed"]}).content.decode()
    assert f'href="{url}?node=node-1"' in page  # rows link to their node's jobs
    assert "boom boom" in page
    assert 'class="truncate"' in page


MALFORMED_FILTERS = [
    ({"since": "yesterday"}, "since", "Enter a valid date/time."),
    ({"since": "2026-01-02T00:00", "until": "2026-01-01T00:00"}, "until", "later than"),
    ({"state": "exploded"}, "state", "Select a valid choice"),
]


def test_malformed_filters_are_shown_beside_their_field(client, dashboard_users, world):
    logged_in_client(client, dashboard_users["viewer"])
    for query, field, message in MALFORMED_FILTERS:
        response = client.get(reverse("dashboard:jobs"), query)
        assert response.status_code == 400, query
        page = response.content.decode()
        error = re.search(rf'<div class="field-error" id="{field}-error">([^<]*)</div>', page)
        assert error, query
        assert message in error.group(1), query
        assert "Correct the filters above" in page


def test_keyset_pages_visit_every_job_once_even_with_equal_times(client, dashboard_users, world):
    base = timezone.now() - timedelta(days=1)
    run, _ = world.run("books-daily")
    # 130 jobs on 13 distinct instants: ties on created_at are broken by id, never skipped.
    Job.objects.bulk_create(
        Job(run=run, task=run.task, project=world.project, spider="books", version=world.version)
        for _ in range(130)
    )
    for index, pk in enumerate(Job.objects.order_by("pk").values_list("pk", flat=True)):
        Job.objects.filter(pk=pk).update(created_at=base + timedelta(minutes=index // 10))
    expected = list(Job.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    logged_in_client(client, dashboard_users["viewer"])
    seen, query, pages = [], "", 0
    while query is not None:
        response = client.get(f"{reverse('dashboard:jobs')}?{query}")
        seen += row_ids(response)
        query, pages = next_link(response), pages + 1
    assert seen == expected
    assert pages == 3
    # A page deep in the list starts right after its cursor, whatever came before.
    middle = Job.objects.get(pk=expected[77])
    deep = client.get(
        reverse("dashboard:jobs"), {"cursor": paging.encode(middle.created_at, middle.pk)}
    )
    assert row_ids(deep) == expected[78:128]
    assert "« Newest" in deep.content.decode()


@pytest.mark.parametrize(
    "filters",
    [
        JobFilters(),
        JobFilters(task="books-daily"),
        JobFilters(spider="books"),
        JobFilters(node="node-1"),
        JobFilters(states=["failed", "lost"]),
        JobFilters(states=["succeeded"], node="node-1"),
        JobFilters(created_from=timezone.now() - timedelta(days=9)),
    ],
)
def test_filtered_pages_read_an_index_in_order_never_sort(world, filters):
    """What keeps a page deep into 100,000 jobs fast: no query sorts its matches."""
    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plans")
    at = timezone.now() - timedelta(days=2)
    cursor = paging.decode(paging.encode(at, 10**6))
    for queryset in job_querysets(filters):
        plan = keyset.after_cursor(queryset, "created_at", cursor)[:51].explain()
        # Sorting only rows that tie on the time ("RIGHT PART OF ORDER BY") streams; sorting
        # every match before the first row comes out is what a deep page cannot afford.
        assert "TEMP B-TREE FOR ORDER BY" not in plan, plan
        assert re.search(r"(SEARCH|SCAN) jobs_job USING (COVERING )?INDEX job_", plan), plan


def test_list_queries_do_not_grow_with_rows(client, dashboard_users, world):
    logged_in_client(client, dashboard_users["viewer"])
    world.run("books-daily", Job.State.RUNNING)
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("dashboard:jobs"))
    for _ in range(20):
        world.run("authors-weekly", Job.State.SUCCEEDED, Job.State.FAILED)
    with CaptureQueriesContext(connection) as many:
        response = client.get(reverse("dashboard:jobs"))
    assert len(row_ids(response)) == 41
    assert len(many) == len(one)


def test_active_rows_refresh_and_stop_once_ended(client, dashboard_users, world):
    _, [running] = world.run("books-daily", Job.State.RUNNING)
    _, [done] = world.run("books-daily", Job.State.SUCCEEDED)
    logged_in_client(client, dashboard_users["viewer"])
    page = client.get(reverse("dashboard:jobs")).content.decode()
    rows_url = f"{reverse('dashboard:job-rows')}?ids={running.pk}"
    assert f'hx-get="{rows_url}"' in page  # only the active row is polled

    Job.objects.filter(pk=running.pk).update(state=Job.State.SUCCEEDED, items=42)
    fragment = client.get(rows_url).content.decode()
    assert f'<tr id="job-row-{running.pk}" hx-swap-oob="true">' in fragment
    assert "42" in fragment
    assert "state-succeeded" in fragment
    assert '<div id="live-rows" hx-swap-oob="true"></div>' in fragment  # nothing left to poll
    assert client.get(reverse("dashboard:job-rows"), {"ids": "1;drop"}).status_code == 400
    assert str(done.pk) not in fragment


# --- the job page -------------------------------------------------------------------------------
def test_job_page_shows_attempts_stats_and_chart(client, dashboard_users, world):
    _, [first] = world.run(
        "books-daily",
        Job.State.FAILED,
        reason="callback raised",
        stats={
            "item_scraped_count": 1234,
            "downloader/response_status_count/200": 1500,
            "downloader/response_status_count/404": 7,
            "downloader/response_bytes": 3 * 1024 * 1024,
            "elapsed_time_seconds": 125.5,
            "start_time": "2026-01-02T03:04:05+00:00",
            "crawlfleet/csv/file/abc": "output/books/abc.csv",
            "crawlfleet/csv/items_written": 1234,
        },
    )
    second = world.retry(first, Job.State.RUNNING, items=10, pages=20)
    now = timezone.now()
    for step in range(5):
        JobSample.objects.create(
            job=second, at=now + timedelta(seconds=step), items=step * 2, pages=step * 4
        )
    logged_in_client(client, dashboard_users["viewer"])

    page = client.get(reverse("dashboard:job", args=[first.pk])).content.decode()
    assert f'href="{reverse("dashboard:job", args=[second.pk])}"' in page  # the chain links on
    assert "callback raised" in page
    assert ">downloader</h3>" in page
    assert '>response_status_count/200</th><td class="num">1,500</td>' in page
    assert "3.0 MB" in page
    assert "2 min (125.50 s)" in page
    assert "2026-01-02 03:04:05 UTC" in page
    assert "output/books/abc.csv" in page
    assert "1,234 rows" in page
    assert "Retry now" not in page  # viewers get no buttons

    page = client.get(reverse("dashboard:job", args=[second.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in page  # still running: refreshed
    chart = re.search(r'data-chart="([^"]+)"', page)
    spec = json.loads(chart.group(1).replace("&quot;", '"'))
    assert [d["label"] for d in spec["datasets"]] == ["items", "pages", "errors"]
    assert [p["y"] for p in spec["datasets"][0]["data"]] == [0, 2, 4, 6, 8]
    assert "From 5 reports" in page

    fragment = client.get(reverse("dashboard:job", args=[second.pk]), HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert body.startswith('<div id="job-live"')
    assert '<section class="section" id="job-stats" hx-swap-oob="true"' in body
    assert "<html" not in body


def test_viewers_see_no_buttons_and_their_forged_posts_are_refused(client, dashboard_users, world):
    _, [queued] = world.run("books-daily", Job.State.QUEUED)
    _, [failed] = world.run("books-daily", Job.State.FAILED)
    logged_in_client(client, dashboard_users["viewer"])
    for job in (queued, failed):
        page = client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
        assert "Cancel job" not in page
        assert "Retry now" not in page
        assert '<form method="post" action="/jobs/' not in page
    assert client.post(reverse("dashboard:job-cancel", args=[queued.pk])).status_code == 403
    assert client.post(reverse("dashboard:job-retry", args=[failed.pk])).status_code == 403
    assert client.get(reverse("dashboard:job-cancel", args=[queued.pk])).status_code == 405
    queued.refresh_from_db()
    assert queued.state == Job.State.QUEUED
    assert not Job.objects.filter(retry_of=failed).exists()
    assert not AuditEntry.objects.filter(action__startswith="job.").exists()
    client.logout()
    url = reverse("dashboard:job", args=[queued.pk])
    assert client.get(url)["Location"] == f"{reverse('dashboard:login')}?next={url}"


def test_operators_cancel_and_retry_and_both_are_audited(client, dashboard_users, world):
    _, [queued] = world.run("books-daily", Job.State.QUEUED)
    _, [failed] = world.run("books-daily", Job.State.FAILED, reason="no heartbeat")
    logged_in_client(client, dashboard_users["operator"])
    page = client.get(reverse("dashboard:job", args=[queued.pk])).content.decode()
    assert "Cancel job" in page
    assert "Retry now" not in page

    response = client.post(reverse("dashboard:job-cancel", args=[queued.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("dashboard:job", args=[queued.pk])
    assert f"Job {queued.pk}: cancelled before it was dispatched." in response.content.decode()
    queued.refresh_from_db()
    assert queued.state == Job.State.CANCELLED
    again = client.post(reverse("dashboard:job-cancel", args=[queued.pk]), follow=True)
    assert "Not cancelled: job" in again.content.decode()

    response = client.post(reverse("dashboard:job-retry", args=[failed.pk]), follow=True)
    retry = Job.objects.get(retry_of=failed)
    assert response.redirect_chain[-1][0] == reverse("dashboard:job", args=[retry.pk])
    assert f"retried as job {retry.pk} (attempt 2)" in response.content.decode()
    assert retry.state == Job.State.QUEUED

    entries = list(AuditEntry.objects.order_by("pk").values_list("action", "actor", "target"))
    operator = dashboard_users["operator"].username
    assert entries[-2:] == [
        ("job.cancel", operator, f"job {queued.pk}"),
        ("job.retry", operator, f"job {failed.pk}"),
    ]
