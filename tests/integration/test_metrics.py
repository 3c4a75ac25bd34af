"""/metrics in-process: who may read it, and that every family says what the database holds.

tests/integration/test_metrics_fleet.py scrapes a real ``crawlfleet web`` while real jobs run.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST

from controlplane.accounts.models import ApiToken
from controlplane.accounts.roles import Role
from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from controlplane.telemetry.histograms import FIRE_TO_DISPATCH, POLL_CYCLE
from tests.fixtures.metrics import by_label, histogram_series, jobs_by_state, parse

TOKEN = "scrape-secret-for-tests"


def scrape(client, **extra):
    return client.get("/metrics", **extra)


@pytest.fixture
def seeded(db):
    """Two projects, three nodes, a task with runs and jobs in several states and causes."""
    now = timezone.now()
    project = Project.objects.create(name="shop")
    Project.objects.create(name="idle")
    egg = b"egg"
    version = Version.objects.create(
        project=project, version="1", egg=egg, sha256=hashlib.sha256(egg).hexdigest(), size=3
    )
    up = Node.objects.create(name="n-up", url="http://10.0.0.1:6800", state="up", capacity=4)
    Node.objects.create(name="n-down", url="http://10.0.0.2:6800", state="down", capacity=2)
    Node.objects.create(
        name="n-drain", url="http://10.0.0.3:6800", state="up", draining=True, capacity=8
    )
    task = Task.objects.create(name="books", project=project, spider="books", cron="0 * * * *")

    def job(run: TaskRun, state: str, **fields) -> Job:
        return Job.objects.create(run=run, project=project, spider="books", version=version,
                                  state=state, **fields)  # fmt: skip

    old = TaskRun.objects.create(
        task=task, scheduled_for=now - timedelta(hours=2), state="succeeded"
    )
    job(old, "succeeded", cause="finished", items=10, pages=12, finished_at=now)
    newest = TaskRun.objects.create(
        task=task, scheduled_for=now - timedelta(hours=1), state="succeeded"
    )
    job(newest, "failed", cause="exit_status", items=1, pages=2, finished_at=now)
    job(newest, "succeeded", cause="finished", items=7, pages=9, attempt=2, finished_at=now)
    active = TaskRun.objects.create(task=task, scheduled_for=now, state="active")
    job(active, "failed", items=3, pages=3, finished_at=now)  # ended before causes were kept
    job(active, "running", node=up)
    job(active, "pending", node=up)
    job(active, "queued")
    job(active, "queued", not_before=now + timedelta(minutes=5))
    adhoc = TaskRun.objects.create(task=None, trigger="api", scheduled_for=now, state="succeeded")
    job(adhoc, "succeeded", cause="finished", items=4, pages=5, finished_at=now)
    return {"now": now}


# --- access ---------------------------------------------------------------------------------------
def test_loopback_may_scrape_without_a_token_by_default(client, seeded):
    response = scrape(client)
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert response["Cache-Control"] == "no-store"
    assert "crawlfleet_jobs" in parse(response.content.decode())
    # Another address is refused, with a plain reason and nothing of the metrics.
    response = scrape(client, REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert b"crawlfleet_" not in response.content
    assert client.post("/metrics").status_code == 405


def test_a_token_is_required_once_set(client, seeded, settings):
    settings.CRAWLFLEET_METRICS_TOKEN = TOKEN
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": TOKEN}):
        response = scrape(client, REMOTE_ADDR="192.0.2.7", **headers)
        assert response.status_code == 401, headers
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"crawlfleet_" not in response.content
    # With a token and no allow list, any address that has the token may scrape.
    good = scrape(client, REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert good.status_code == 200
    # An API token of a viewer (or more) works too; a node's registration token does not.
    _, viewer = ApiToken.create("prometheus", role=Role.VIEWER)
    _, node = ApiToken.create("node", role=Role.NODE)
    assert scrape(client, HTTP_AUTHORIZATION=f"Bearer {viewer}").status_code == 200
    assert scrape(client, HTTP_AUTHORIZATION=f"Bearer {node}").status_code == 401


def test_the_allow_list_decides_the_address(client, seeded, settings):
    settings.CRAWLFLEET_METRICS_ALLOW = "10.0.0.0/8, 2001:db8::/32"
    assert scrape(client, REMOTE_ADDR="10.20.30.40").status_code == 200
    assert scrape(client, REMOTE_ADDR="::ffff:10.9.9.9").status_code == 200  # dual-stack socket
    assert scrape(client, REMOTE_ADDR="2001:db8::5").status_code == 200
    assert scrape(client, REMOTE_ADDR="127.0.0.1").status_code == 403  # loopback not listed
    assert scrape(client, REMOTE_ADDR="").status_code == 403
    # Both: the address first (403), then the token (401).
    settings.CRAWLFLEET_METRICS_TOKEN = TOKEN
    assert scrape(client, REMOTE_ADDR="192.0.2.1").status_code == 403
    assert scrape(client, REMOTE_ADDR="10.0.0.1").status_code == 401
    ok = scrape(client, REMOTE_ADDR="10.0.0.1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert ok.status_code == 200


def test_a_malformed_allow_list_fails_the_system_check(settings):
    from controlplane.metrics.checks import metrics_allow_list

    settings.CRAWLFLEET_METRICS_ALLOW = "10.0.0.0/8,not-a-network"
    assert [e.id for e in metrics_allow_list()] == ["crawlfleet.E001"]
    settings.CRAWLFLEET_METRICS_ALLOW = "10.0.0.0/8"
    assert metrics_allow_list() == []


# --- what it says ---------------------------------------------------------------------------------
def test_every_family_matches_the_database(client, seeded, django_assert_max_num_queries):
    FIRE_TO_DISPATCH.observe_many([0.3, 4.0, 45.0], trigger="cron")
    POLL_CYCLE.observe(0.2)
    with django_assert_max_num_queries(15):
        families = parse(scrape(client).content.decode())

    assert by_label(families, "crawlfleet_jobs", "state") == jobs_by_state()
    ended = {
        labels: value
        for (name, labels), value in families["crawlfleet_jobs_ended"].items()
        if name == "crawlfleet_jobs_ended_total"
    }
    assert ended == {
        (("cause", "exit_status"), ("state", "failed")): 1,
        (("cause", "finished"), ("state", "succeeded")): 3,
        (("cause", "unknown"), ("state", "failed")): 1,
    }
    runs = by_label(families, "crawlfleet_runs", "state")
    assert (runs["succeeded"], runs["active"], runs["missed"]) == (3, 1, 0)
    assert by_label(families, "crawlfleet_queue_depth", "project") == {"shop": 2, "idle": 0}
    assert by_label(families, "crawlfleet_queue_backoff", "project") == {"shop": 1, "idle": 0}

    assert by_label(families, "crawlfleet_node_up", "node") == {
        "n-up": 1, "n-down": 0, "n-drain": 1
    }  # fmt: skip
    states = families["crawlfleet_node_state"]
    assert states[("crawlfleet_node_state", (("node", "n-down"), ("state", "down")))] == 1
    assert states[("crawlfleet_node_state", (("node", "n-down"), ("state", "up")))] == 0
    assert by_label(families, "crawlfleet_node_jobs", "node") == {
        "n-up": 2, "n-down": 0, "n-drain": 0
    }  # fmt: skip
    assert by_label(families, "crawlfleet_node_capacity", "node")["n-drain"] == 8
    assert by_label(families, "crawlfleet_node_draining", "node")["n-drain"] == 1
    assert by_label(families, "crawlfleet_node_schedulable", "node") == {
        "n-up": 1, "n-down": 0, "n-drain": 0
    }  # fmt: skip

    items = by_label(families, "crawlfleet_task_items", "task", "crawlfleet_task_items_total")
    assert items == {"books": 21, "": 4}  # "": ad-hoc jobs, outside any task
    pages = by_label(families, "crawlfleet_task_pages", "task", "crawlfleet_task_pages_total")
    assert pages == {"books": 26, "": 5}
    # The newest successful run's successful jobs: the retry that succeeded, not the failure.
    assert by_label(families, "crawlfleet_task_last_success_items", "task") == {"books": 7}
    last_at = by_label(families, "crawlfleet_task_last_success_timestamp_seconds", "task")
    assert last_at["books"] == pytest.approx(seeded["now"].timestamp())

    cron = histogram_series(families, "crawlfleet_fire_to_dispatch_seconds", trigger="cron")
    assert (cron["count"], cron["0.5"], cron["5.0"], cron["30.0"], cron["60.0"]) == (3, 1, 2, 2, 3)
    assert cron["+Inf"] == 3
    assert cron["sum"] == pytest.approx(49.3)
    manual = histogram_series(families, "crawlfleet_fire_to_dispatch_seconds", trigger="manual")
    assert manual["count"] == 0  # shown from the start, so queries over it never come up empty
    assert histogram_series(families, "crawlfleet_poll_cycle_seconds")["count"] == 1


def test_alert_deliveries_and_unrouted_events_match_the_queue(client, seeded):
    from controlplane import events
    from controlplane.alerts import services
    from controlplane.alerts.models import AlertRule, Delivery
    from controlplane.alerts.routing import route_batch

    channel = services.create_channel(
        {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}
    )
    AlertRule.objects.create(name="all", channel=channel)
    for node in (1, 2, 3):
        events.raise_event(events.NODE_DOWN, f"node {node} down", node_id=node)
    families = parse(scrape(client).content.decode())
    assert (
        families["crawlfleet_alert_events_unrouted"][("crawlfleet_alert_events_unrouted", ())] == 3
    )
    route_batch(timezone.now())
    Delivery.objects.filter(pk=Delivery.objects.order_by("pk").first().pk).update(state="failed")
    families = parse(scrape(client).content.decode())
    deliveries = families["crawlfleet_alert_deliveries"]
    assert (
        deliveries[
            ("crawlfleet_alert_deliveries", (("channel_kind", "webhook"), ("state", "pending")))
        ]
        == 2
    )
    assert (
        deliveries[
            ("crawlfleet_alert_deliveries", (("channel_kind", "webhook"), ("state", "failed")))
        ]
        == 1
    )
    assert (
        deliveries[("crawlfleet_alert_deliveries", (("channel_kind", "email"), ("state", "sent")))]
        == 0
    )
    assert (
        families["crawlfleet_alert_events_unrouted"][("crawlfleet_alert_events_unrouted", ())] == 0
    )
