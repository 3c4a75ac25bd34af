"""``schedulebatch.json`` on real nodes: what a crawlfleet node queues from a batch, what it
refuses, and the dispatcher falling back to ``schedule.json`` on a stock Scrapyd.

The nodes poll their queues once an hour, so everything queued stays pending and can be read
back, from ``listjobs.json`` and from the node's own queue database.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.jobs import dispatch as dispatcher
from controlplane.jobs.models import Job
from controlplane.lib.procutil import free_port
from controlplane.lib.scheduleconnection import BatchUnsupported, ScheduleConnection
from controlplane.lib.scrapyd import ScrapydClient, ScrapydError
from tests.fixtures.common import VENV_BIN
from tests.fixtures.fleet import register_fleet, start_idle_nodes
from tests.fixtures.jobs import create_adhoc_run
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd]

SPIDER = "books"


@pytest.fixture(scope="module")
def idle_node(session_scrapyd_nodes: NodeFactory, crawler_egg: EggFile) -> ScrapydNode:
    return start_idle_nodes(session_scrapyd_nodes, crawler_egg, count=1)[0]


@pytest.fixture(scope="module")
def stock_scrapyd(
    tmp_path_factory: pytest.TempPathFactory, crawler_egg: EggFile
) -> Iterator[ScrapydNode]:
    """Scrapyd itself, with its own default services only: no schedulebatch.json."""
    base = tmp_path_factory.mktemp("stock-scrapyd")
    port = free_port()
    (base / "scrapyd.conf").write_text(
        "[scrapyd]\n"
        f"bind_address = 127.0.0.1\nhttp_port = {port}\npoll_interval = 3600\n"
        f"eggs_dir = {base / 'eggs'}\nlogs_dir = {base / 'logs'}\ndbs_dir = {base / 'dbs'}\n"
        "items_dir =\n"
    )
    node = ScrapydNode("stock", port, base / "node", [str(VENV_BIN / "scrapyd")])
    node.start()
    client = ScrapydClient(node.url, timeout=60)
    client.addversion(crawler_egg.project, crawler_egg.version, crawler_egg.data)
    assert SPIDER in client.listspiders(crawler_egg.project, crawler_egg.version)
    yield node
    node.stop()
    node.session.close()


def entry(egg: EggFile, **fields: Any) -> dict[str, Any]:
    job = {
        "project": egg.project,
        "spider": SPIDER,
        "_version": egg.version,
        "jobid": f"b-{uuid.uuid4().hex}",
        "settings": {"CLOSESPIDER_ITEMCOUNT": "3", "X": "a=b"},
        "args": {"start_url": "http://shop.example/", "task": "7"},
    }
    job.update(fields)
    return job


def post_batch(node: ScrapydNode, body: Any) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return node.request(
        "POST",
        "schedulebatch.json",
        data=raw,
        headers={"Content-Type": "application/json"},
        expect=None,
    )


def pending_ids(node: ScrapydNode) -> set[str]:
    return {e["id"] for e in node.listjobs()["pending"]}


def queued_messages(node: ScrapydNode, project: str) -> dict[str, tuple[float, dict[str, Any]]]:
    """The node's own queue: job id -> (priority, message), exactly as its launcher reads it."""
    path = Path(node.dir) / "dbs" / f"{project}.db"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT priority, message FROM spider_queue").fetchall()
    messages = [(priority, json.loads(bytes(message).decode())) for priority, message in rows]
    return {message["_job"]: (priority, message) for priority, message in messages}


def test_a_batch_is_queued_exactly_as_schedule_json_queues_each_job(idle_node, crawler_egg):
    batch = [entry(crawler_egg), entry(crawler_egg, priority=5)]
    answer = post_batch(idle_node, {"jobs": batch})
    assert answer["status"] == "ok", answer
    assert answer["node_name"] == idle_node.name
    assert answer["jobs"] == [{"jobid": job["jobid"], "status": "ok"} for job in batch]
    assert {job["jobid"] for job in batch} <= pending_ids(idle_node)

    # The same job through Scrapyd's own schedule.json, for comparison.
    single = f"s-{uuid.uuid4().hex}"
    form = {"project": crawler_egg.project, "spider": SPIDER, "_version": crawler_egg.version}
    form |= {"jobid": single, "priority": "5", "start_url": "http://shop.example/", "task": "7"}
    form["setting"] = ["CLOSESPIDER_ITEMCOUNT=3", "X=a=b"]
    assert idle_node.post("schedule.json", form)["jobid"] == single

    queued = queued_messages(idle_node, crawler_egg.project)
    expected_priority, expected = queued[single]
    for job, priority in zip(batch, (0.0, 5.0), strict=True):
        got_priority, got = queued[job["jobid"]]
        assert got_priority == priority
        assert {**got, "_job": single} == expected
    assert expected_priority == 5.0


def test_a_mixed_batch_queues_the_good_jobs_and_says_why_not_for_each_other(idle_node, crawler_egg):
    good = entry(crawler_egg)
    bad = {
        "spider 'nope' not found": entry(crawler_egg, spider="nope"),
        "version '1' not found": entry(crawler_egg, _version="1"),
        "project 'nowhere' not found": entry(crawler_egg, project="nowhere"),
        "reserved by Scrapyd": entry(crawler_egg, args={"_job": "x", "settings": "y"}),
        "'settings' must be an object": entry(crawler_egg, settings={"A": 1}),
        "'priority' must be a number": entry(crawler_egg, priority="high"),
        "'spider' must be a non-empty string": entry(crawler_egg, spider=""),
    }
    before = pending_ids(idle_node)
    answer = post_batch(idle_node, {"jobs": [good, *bad.values()]})
    assert answer["status"] == "ok", answer
    first, *others = answer["jobs"]
    assert first == {"jobid": good["jobid"], "status": "ok"}
    for (message, job), got in zip(bad.items(), others, strict=True):
        assert got["jobid"] == job["jobid"]
        assert got["status"] == "error"
        assert message in got["message"], got
    assert pending_ids(idle_node) - before == {good["jobid"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[1, 2]", 'must be {"jobs": [...]}'),
        ({"jobs": []}, "at least one job"),
        ({"jobs": [{"project": "crawler", "spider": SPIDER}]}, "non-empty string 'jobid'"),
        ({"jobs": ["crawler"]}, "jobs[0] must be an object"),
        ({"jobs": [{"jobid": "twice"}, {"jobid": "twice"}]}, "'twice' is in the batch twice"),
        ({"jobs": [{"jobid": f"j{i}"} for i in range(1001)]}, "at most 1000"),
    ],
)
def test_a_body_that_is_not_a_batch_is_refused_whole(idle_node, crawler_egg, body, message):
    before = idle_node.get("daemonstatus.json")["pending"]
    answer = post_batch(idle_node, body)
    assert answer["status"] == "error"
    assert message in answer["message"], answer
    assert idle_node.get("daemonstatus.json")["pending"] == before


def test_the_client_tells_a_node_without_batches_apart(stock_scrapyd, idle_node, crawler_egg):
    stock = ScheduleConnection(stock_scrapyd.url, "", "", timeout=10)
    before = pending_ids(stock_scrapyd)
    with pytest.raises(BatchUnsupported):
        stock.schedule_batch([entry(crawler_egg)])
    assert pending_ids(stock_scrapyd) == before  # nothing queued
    ours = ScheduleConnection(idle_node.url, "", "", timeout=10)
    good, bad = entry(crawler_egg), entry(crawler_egg, spider="nope")
    answers = ours.schedule_batch([good, bad])
    assert [a.jobid for a in answers] == [good["jobid"], bad["jobid"]]
    assert answers[0].error == ""
    assert "spider 'nope' not found" in answers[1].error


def test_the_dispatcher_sends_one_by_one_to_a_stock_scrapyd(
    db, stock_scrapyd, idle_node, crawler_egg, monkeypatch
):
    support = dispatcher.BatchSupport()
    monkeypatch.setattr(dispatcher, "BATCH_SUPPORT", support)
    fleet = register_fleet([stock_scrapyd, idle_node], crawler_egg, capacities=(3, 3))
    fleet.rows[1].enabled = False  # the stock node first, alone
    fleet.rows[1].save(update_fields=["enabled"])
    jobs = [create_adhoc_run(fleet.project, SPIDER) for _ in range(3)]

    assert dispatcher.dispatch() == 3
    assert not support.worth_trying(stock_scrapyd.url)  # remembered: no batch asked next time
    assert support.worth_trying(idle_node.url)
    on_node = {e["id"]: e for e in stock_scrapyd.listjobs()["pending"]}
    for job in jobs:
        job.refresh_from_db()
        assert job.state == Job.State.PENDING
        assert job.node_id == fleet.rows[0].pk
        sent = on_node[job.scrapyd_job_id]
        assert sent["version"] == crawler_egg.version
        assert job.check_report_token(sent["settings"]["CRAWLFLEET_JOB_TOKEN"])

    # Both nodes now: the crawlfleet node gets its share in one batch, the stock one by one.
    fleet.rows[1].enabled = True
    fleet.rows[1].save(update_fields=["enabled"])
    more = [create_adhoc_run(fleet.project, SPIDER) for _ in range(3)]
    assert dispatcher.dispatch() == 3
    placed = {Job.objects.get(pk=j.pk).node_id for j in more}
    assert placed == {fleet.rows[1].pk}  # the stock node is full (3 of 3)
    assert {j.scrapyd_job_id for j in more} <= pending_ids(idle_node)


def test_a_batch_to_a_node_with_basic_auth_needs_its_credentials(tmp_path, crawler_egg):
    port = free_port()
    directory = tmp_path / "authnode"
    argv = [str(VENV_BIN / "crawlfleet"), "node", f"--port={port}", f"--dir={directory}"]
    argv += ["--bind=127.0.0.1", "--name=authnode", "--poll-interval=3600"]
    credentials = {"SCRAPYD_USERNAME": "ci", "SCRAPYD_PASSWORD": "s3cret"}
    node = ScrapydNode("authnode", port, directory, argv, credentials)
    node.session.auth = ("ci", "s3cret")
    node.start()
    try:
        client = ScrapydClient(node.url, "ci", "s3cret", timeout=60)
        client.addversion(crawler_egg.project, crawler_egg.version, crawler_egg.data)
        job = entry(crawler_egg)
        stranger = ScheduleConnection(node.url, "", "", timeout=10)
        with pytest.raises(ScrapydError, match=r"refused our credentials \(401\)") as refused:
            stranger.schedule_batch([job])
        assert not refused.value.unreachable  # a refusal: the job goes back to the queue
        assert node.listjobs()["pending"] == []
        [answer] = ScheduleConnection(node.url, "ci", "s3cret", timeout=10).schedule_batch([job])
        assert answer.error == ""
        assert pending_ids(node) == {job["jobid"]}
    finally:
        node.stop()
        node.session.close()
