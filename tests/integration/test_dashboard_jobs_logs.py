"""The job page's live log and items feed, proxied through the control plane, in-process.

The log endpoint takes a byte offset and nothing else; the service reads only the job's own log
path, in bounded ranges of whole lines, with secrets masked; a node that is down (a real closed
port), a log not there yet or already deleted, a job never placed: each gives a message, never
an error. Nodes are real HTTP servers (tests/fixtures/logserver.py) that record what was asked.
Also: the progress samples each spider report adds, and their bound.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.jobs import logs, samples
from controlplane.jobs.models import Job
from controlplane.lib.procutil import free_port
from controlplane.nodes.models import Node
from tests.fixtures.dashboard import logged_in_client
from tests.fixtures.joblists import World
from tests.fixtures.logserver import LogServer

pytestmark = pytest.mark.usefixtures("cheap_passwords")
TOKEN = "Zr4-secret-report-token-qu1t3-l0ng"


@pytest.fixture
def world(db) -> World:
    return World.build()


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
