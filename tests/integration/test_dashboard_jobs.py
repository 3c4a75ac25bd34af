"""The dashboard's job list and job page.

In-process: filters, keyset pages, permissions, the log proxy (its offset, the only file it
reads, nodes that are down or forgot the log), cancel and retry with their audit entries, the
stats table and the progress chart. Then in Chromium against a real ``crawlfleet web``, real
Scrapyd nodes and real scheduler and poller processes: a job followed live from queued to
succeeded with its log, stats and chart; a long job cancelled and a failed one retried from
their pages.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts.models import AuditEntry
from controlplane.dashboard import paging
from controlplane.jobs import logs, samples
from controlplane.jobs.listing import JobFilters, job_querysets
from controlplane.jobs.models import Job, JobSample
from controlplane.lib.procutil import free_port
from controlplane.nodes.models import Node
from tests.fixtures.browser import confine
from tests.fixtures.common import wait_until
from tests.fixtures.dashboard import log_in, logged_in_client, screenshot
from tests.fixtures.fleet import job_state, make_task, start_run
from tests.fixtures.joblists import World
from tests.fixtures.logserver import LogServer

TOKEN = "Zr4-secret-report-token-qu1t3-l0ng"


@pytest.fixture(autouse=True)
def fast_passwords(request, settings):
    """In-process logins hash with a cheap hasher: these tests are about pages, not passwords.
    (Browser tests log in to a real ``crawlfleet web``, which knows only the real hashers.)"""
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
        plan = paging._after(queryset, "created_at", cursor)[:51].explain()
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


# --- the log proxy ------------------------------------------------------------------------------
BAD_LOG_QUERIES = [
    "offset=abc",
    "offset=-1",
    "offset=1.5",
    "offset=1e3",
    "offset=%D9%A3",  # an Arabic-Indic digit: a digit to str.isdigit(), not to us
    "offset=",
    "offset=99999999999999999999",
    "offset=0&path=/etc/passwd",
    "path=logs/other/spider/job.log",
]


def test_log_proxy_takes_only_a_byte_offset(client, dashboard_users, world):
    _, [job] = world.run("books-daily", Job.State.RUNNING)
    logged_in_client(client, dashboard_users["viewer"])
    url = reverse("dashboard:job-log", args=[job.pk])
    for query in BAD_LOG_QUERIES:
        assert client.get(f"{url}?{query}").status_code == 400, query


def write_log(root: Path, job: Job, text: str) -> Path:
    path = root / job.log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_log_is_read_from_the_jobs_own_path_in_bounded_ranges(tmp_path, world):
    _, [job, other] = world.run("books-daily", Job.State.RUNNING, Job.State.RUNNING)
    lines = [f"2026-01-01 00:00:{n % 60:02d} [books] INFO: line {n}\n" for n in range(4000)]
    text = "".join(lines) + "2026-01-01 00:01:00 [books] INFO: half a li"
    write_log(tmp_path, job, text)
    write_log(tmp_path, other, "someone else's log\n")
    with LogServer(tmp_path) as server:
        Node.objects.filter(pk=job.node_id).update(url=server.url)
        job.refresh_from_db()
        tail = logs.read_log(job)
        own = f"/{job.log_path}"
        assert {path for _, path, _ in server.requests} == {own}
        assert job.log_path == f"logs/crawler/books/{job.scrapyd_job_id}.log"
        ranges = [r for method, _, r in server.requests if method == "GET"]
        assert ranges == [f"bytes={len(text) - logs.LOG_CHUNK_BYTES}-{len(text) - 1}"]
        assert tail.text.startswith("2026-01-01")
        assert tail.text.endswith("line 3999\n")
        assert "half a li" not in tail.text  # only whole lines; the rest follows later
        assert tail.skipped > 0
        assert not tail.complete

        server.requests.clear()
        following = logs.read_log(job, tail.next_offset)
        assert following.text == ""
        assert following.next_offset == tail.next_offset
        Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
        job.refresh_from_db()
        ended = logs.read_log(job, tail.next_offset)
        assert ended.text == "2026-01-01 00:01:00 [books] INFO: half a li"
        assert ended.complete
        assert {path for _, path, _ in server.requests} == {own}
        beginning = logs.read_log(job, 0, max_bytes=100)
        assert beginning.text == lines[0] + lines[1]
        assert beginning.more
    with pytest.raises(ValueError, match="0 or more"):
        logs.read_log(job, -5)


def test_log_proxy_masks_secrets_and_says_when_a_log_is_gone(
    client, dashboard_users, tmp_path, world
):
    _, [job] = world.run("books-daily", Job.State.RUNNING)
    write_log(
        tmp_path,
        job,
        "2026-01-01 00:00:00 [scrapy.crawler] INFO: Overridden settings:\n"
        f"{{'CRAWLFLEET_JOB_TOKEN': '{TOKEN}',\n"
        " 'REDIS_URL': 'redis://:hunter2-pass@127.0.0.1:6379/0'}\n",
    )
    logged_in_client(client, dashboard_users["viewer"])
    url = reverse("dashboard:job-log", args=[job.pk])
    with LogServer(tmp_path) as server:
        Node.objects.filter(pk=job.node_id).update(url=server.url)
        body = client.get(url).content.decode()
        assert "Overridden settings" in body
        assert TOKEN not in body
        assert "hunter2" not in body
        assert "&#x27;CRAWLFLEET_JOB_TOKEN&#x27;: &#x27;(hidden)&#x27;" in body
        assert 'hx-trigger="every 2s"' in body  # running: keep following

        (tmp_path / job.log_path).unlink()
        Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
        gone = client.get(url, {"offset": "120"})
    assert gone.status_code == 200
    text = gone.content.decode()
    assert "no longer has this job&#x27;s log" in text
    assert "jobs_to_keep" in text
    assert 'id="log-next"' not in text  # nothing more to ask for


def test_a_node_that_is_down_gives_a_message_not_an_error(client, dashboard_users, world):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    Node.objects.filter(pk=world.nodes[0].pk).update(url=closed)
    _, [job] = world.run("books-daily", Job.State.RUNNING, node=world.nodes[0])
    logged_in_client(client, dashboard_users["viewer"])
    response = client.get(reverse("dashboard:job-log", args=[job.pk]), {"offset": "0"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Node node-1 does not answer, so the log cannot be read now" in body
    assert 'hx-trigger="every 5s"' in body
    assert "offset=0" in body
    page = client.get(reverse("dashboard:job", args=[job.pk]))
    assert page.status_code == 200  # the page itself never waits for a node


def test_a_job_never_placed_has_no_log_to_follow(client, dashboard_users, world):
    _, [job] = world.run("books-daily", Job.State.QUEUED)
    Job.objects.filter(pk=job.pk).update(node=None)
    logged_in_client(client, dashboard_users["viewer"])
    waiting = client.get(reverse("dashboard:job-log", args=[job.pk])).content.decode()
    assert "Waiting for a node" in waiting
    assert 'id="log-next"' in waiting
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)
    ended = client.get(reverse("dashboard:job-log", args=[job.pk])).content.decode()
    assert "never ran on a node" in ended
    assert 'id="log-next"' not in ended


def test_an_items_feed_is_offered_only_when_the_node_serves_one(
    client, dashboard_users, tmp_path, world
):
    earlier = timezone.now() - timedelta(hours=1)
    _, [job] = world.run("books-daily", Job.State.SUCCEEDED, at=earlier)
    _, [other] = world.run("books-daily", Job.State.SUCCEEDED, at=earlier + timedelta(seconds=1))
    lines = "".join(f'{{"n": {n}}}\n' for n in range(120_000))  # more than one read
    (tmp_path / job.items_path).parent.mkdir(parents=True)
    (tmp_path / job.items_path).write_text(lines)
    (tmp_path / "items" / "crawler" / "books" / "elsewhere.jl").write_text("not this one\n")
    logged_in_client(client, dashboard_users["viewer"])
    with LogServer(tmp_path) as server:
        Node.objects.filter(pk=job.node_id).update(url=server.url)  # both jobs ran there
        page = client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
        where = reverse("dashboard:job-items-where", args=[job.pk])
        assert f'hx-get="{where}"' in page  # asked once the page is shown, not while rendering
        offer = client.get(where).content.decode()
        assert f'href="{reverse("dashboard:job-items", args=[job.pk])}"' in offer
        assert server.url not in offer  # never a link to the node itself
        response = client.get(reverse("dashboard:job-items", args=[job.pk]))
        assert response.status_code == 200
        assert b"".join(response.streaming_content).decode() == lines
        assert 'filename="books-job-' in response["Content-Disposition"]
        ranges = [r for method, path, r in server.requests if method == "GET"]
        assert len(ranges) >= 2  # read in bounded pieces
        assert {path for _, path, _ in server.requests} == {f"/{job.items_path}"}

        none = client.get(reverse("dashboard:job-items-where", args=[other.pk])).content.decode()
        assert "serves no items file for this job" in none
        assert client.get(reverse("dashboard:job-items", args=[other.pk])).status_code == 404


# --- samples ------------------------------------------------------------------------------------
def test_samples_are_thinned_to_a_bound_keeping_first_and_last(world):
    _, [job] = world.run("books-daily", Job.State.RUNNING)
    start = timezone.now()
    for step in range(samples.MAX_SAMPLES + 101):
        job.items = step
        samples.record_sample(job, start + timedelta(seconds=step))
    kept = samples.series(job)
    assert len(kept) <= samples.MAX_SAMPLES
    assert kept[0].items == 0
    assert kept[-1].items == samples.MAX_SAMPLES + 100
    assert [s.items for s in kept] == sorted(s.items for s in kept)


def test_each_report_of_the_spider_adds_a_sample(client, world):
    _, [job] = world.run("books-daily", Job.State.PENDING)
    secret = job.issue_report_token()
    job.save()

    def report(event: str, **stats: int) -> dict:
        response = client.post(
            f"/api/v1/report/{job.scrapyd_job_id}",
            data=json.dumps({"event": event, "stats": stats}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        assert response.status_code == 200, response.content
        return response.json()

    report("started")
    report("heartbeat", item_scraped_count=5, response_received_count=7)
    report("heartbeat", item_scraped_count=9, response_received_count=12)
    report("finished", item_scraped_count=11, response_received_count=15)
    report("finished", item_scraped_count=99)  # a replay changes nothing
    assert [(s.items, s.pages) for s in samples.series(job)] == [(0, 0), (5, 7), (9, 12), (11, 15)]
    job.refresh_from_db()
    assert (job.state, job.items) == (Job.State.RUNNING, 11)


# --- in a real browser, with real nodes and control-plane processes ---------------------------
# The failproject has no report extension of its own; this turns the crawler's on (the rest of
# the project's EXTENSIONS are kept off as in its settings), so the spider heartbeats.
REPORTING = {
    "EXTENSIONS": json.dumps(
        {
            "scrapy.extensions.telnet.TelnetConsole": None,
            "scrapy.extensions.remote_control.RemoteControl": None,
            "crawler.extensions.report.OutcomeReporter": 500,
        }
    )
}
WATCH_STATES = """() => {
    const now = () => document.querySelector('#job-live')?.dataset.state;
    window.notReloaded = true;
    window.seenStates = [now()];
    new MutationObserver(() => {
        const state = now();
        if (state && window.seenStates[window.seenStates.length - 1] !== state) {
            window.seenStates.push(state);
        }
    }).observe(document.body, {childList: true, subtree: true});
}"""


def job_state_on_page(page, state: str, timeout: float = 60_000) -> None:
    page.wait_for_selector(f'#job-live[data-state="{state}"]', timeout=timeout)


@pytest.mark.browser
@pytest.mark.scrapyd
def test_a_job_is_followed_live_from_queued_to_succeeded(
    fleet, cp_web, cp_process, page, dashboard_users
):
    blocked = confine(page, cp_web)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    cp_process("poller")
    task = make_task(
        fleet, "ok", args={"count": "12"}, settings={**REPORTING, "DOWNLOAD_DELAY": "0.4"}
    )
    job = start_run(task).jobs.get()
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/jobs/{job.pk}/")
    job_state_on_page(page, "queued")
    assert page.locator("#job-live h1 .badge").inner_text() == "queued"
    page.evaluate(WATCH_STATES)

    cp_process("scheduler")  # only now is the job dispatched
    job_state_on_page(page, "succeeded", timeout=90_000)
    assert page.evaluate("window.notReloaded") is True
    seen = page.evaluate("window.seenStates")
    assert seen[0] == "queued"
    assert seen[-1] == "succeeded"
    order = ["queued", "dispatching", "pending", "running", "succeeded"]
    assert seen == sorted(seen, key=order.index), seen
    assert "running" in seen

    # The log came through the control plane, up to its end.
    page.locator("#log-status").filter(has_text="this is the end of its log").wait_for()
    log = page.inner_text("#job-log")
    assert "[scrapy.core.engine] INFO: Spider opened" in log
    assert "Spider closed (finished)" in log
    assert "Dumping Scrapy stats" in log
    assert page.locator("#log-next").count() == 0  # polling stopped
    job.refresh_from_db()
    node = fleet.process(job.node_id)
    assert node.job_log("failproject", "ok", job.scrapyd_job_id).endswith(log.rstrip("\n") + "\n")

    stats = page.locator("#job-stats")
    stats.filter(has_text="item_scraped_count").wait_for()
    assert stats.locator("tr", has_text="item_scraped_count").locator("td").inner_text() == "12"
    assert "response_status_count/200" in stats.inner_text()
    assert page.locator(".tile-label:text-is('Items') + .tile-value").inner_text() == "12"

    points = page.evaluate(
        """() => {
            const chart = Chart.getChart(document.querySelector('#job-live canvas[data-chart]'));
            return chart ? chart.data.datasets[0].data.map(p => p.y) : null;
        }"""
    )
    assert points is not None
    assert len(points) >= 3  # started, at least one heartbeat, finished
    assert points == sorted(points)
    assert points[-1] == 12
    screenshot(page, "jobs-job-succeeded")

    page.goto(f"{cp_web}/jobs/?node={job.node.name}")
    row = page.locator(f"#job-row-{job.pk}")
    assert "succeeded" in row.inner_text()
    screenshot(page, "jobs-list-by-node")
    assert blocked == [], blocked
    assert errors == []


@pytest.mark.browser
@pytest.mark.scrapyd
def test_a_long_job_is_cancelled_from_its_page(fleet, cp_web, cp_process, page, dashboard_users):
    blocked = confine(page, cp_web)
    cp_process("poller")
    task = make_task(fleet, "sleepy", args={"seconds": "300"}, max_attempts=1)
    job = start_run(task).jobs.get()
    log_in(page, cp_web, dashboard_users["operator"])
    # The job list keeps its active rows current.
    page.goto(f"{cp_web}/jobs/?task={task.name}")
    row = page.locator(f"#job-row-{job.pk}")
    assert "queued" in row.inner_text()
    page.evaluate("window.notReloaded = true")
    cp_process("scheduler")
    page.wait_for_selector(f"#job-row-{job.pk} .badge.state-running", timeout=60_000)
    assert page.evaluate("window.notReloaded") is True
    assert row.locator("td").nth(3).inner_text() in {r.name for r in fleet.rows}  # its node
    screenshot(page, "jobs-list-live")

    row.get_by_role("link", name=str(job.pk)).click()
    page.wait_for_url(f"{cp_web}/jobs/{job.pk}/")
    job_state_on_page(page, "running")
    page.locator("#job-log").filter(has_text="Spider opened").wait_for()

    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_url(f"{cp_web}/jobs/{job.pk}/")
    message = page.locator(".messages li.success").inner_text()
    assert message.startswith(f"Job {job.pk}: ")
    assert "stopping on" in message or "cancelled" in message, message
    job_state_on_page(page, "cancelled")
    assert page.get_by_role("button", name="Cancel job").count() == 0
    assert page.get_by_role("button", name="Retry now").count() == 1  # cancelled jobs may retry
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    entry = AuditEntry.objects.get(action="job.cancel")
    assert (entry.actor, entry.target) == (dashboard_users["operator"].username, f"job {job.pk}")
    screenshot(page, "jobs-job-cancelled")
    assert blocked == [], blocked


@pytest.mark.browser
@pytest.mark.scrapyd
def test_a_failed_job_is_retried_from_its_page(fleet, cp_web, cp_process, page, dashboard_users):
    blocked = confine(page, cp_web)
    cp_process("scheduler")
    cp_process("poller")
    task = make_task(fleet, "callback_error", max_attempts=1)
    job = start_run(task).jobs.get()
    wait_until(job_state(job, *Job.FINAL), 60, "the first attempt to end")
    assert job.state == Job.State.FAILED, job.reason
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/jobs/{job.pk}/")
    assert page.locator("#job-live").get_attribute("data-state") == "failed"
    assert page.get_by_role("button", name="Cancel job").count() == 0

    page.get_by_role("button", name="Retry now").click()
    page.wait_for_url(re.compile(rf"{cp_web}/jobs/(?!{job.pk}/)\d+/"))
    retry = Job.objects.get(retry_of=job)
    assert page.url == f"{cp_web}/jobs/{retry.pk}/"
    assert f"retried as job {retry.pk} (attempt 2)" in page.locator(".messages").inner_text()
    attempts = page.locator("table.attempts tbody tr")
    assert attempts.count() == 2
    assert "failed" in attempts.nth(0).inner_text()
    job_state_on_page(page, "failed")  # the retry runs and fails the same way, live
    assert "callback_error: deliberate failure" in page.inner_text("#job-log")
    entry = AuditEntry.objects.get(action="job.retry")
    assert entry.target == f"job {job.pk}"
    assert entry.detail == {"retry": retry.pk}
    screenshot(page, "jobs-job-retried")

    page.goto(f"{cp_web}/jobs/?task={task.name}")
    assert page.locator("tbody tr[id^=job-row-]").count() == 2
    screenshot(page, "jobs-list-by-task")
    assert blocked == [], blocked
