"""The events the lower layers raise (node_down/back, deploy_failed, task_missed), raised once
however many replicas see the change; and the routers' race for a group's open delivery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.alerts import routing, services
from controlplane.alerts.models import AlertEvent, Delivery
from controlplane.deploys.models import Project, Version
from controlplane.deploys.nodecalls import NodeResult, record
from controlplane.events import DEPLOY_FAILED, NODE_BACK, NODE_DOWN, TASK_MISSED, raise_event
from controlplane.loops.scheduler import Scheduler
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task


@pytest.fixture
def node(db, settings) -> Node:
    settings.CRAWLFLEET_NODE_DOWN_AFTER_FAILURES = 2
    return Node.objects.create(name="n1", url="http://127.0.0.1:9", state=Node.State.UP)


def events(kind: str) -> list[AlertEvent]:
    return list(AlertEvent.objects.filter(kind=kind).order_by("id"))


def test_node_down_and_back_are_raised_once_per_flip(node):
    replica = Node.objects.get(pk=node.pk)  # what a second poller read
    node.record_check(ok=False, error="connection refused")
    replica.record_check(ok=False, error="connection refused")
    assert Node.objects.get(pk=node.pk).state == Node.State.DEGRADED
    node.record_check(ok=False, error="connection refused")
    assert node.state == Node.State.DOWN
    # The second poller, holding the row it read before, loses the flip: no second event.
    stale = Node.objects.get(pk=node.pk)
    stale.state = Node.State.DEGRADED
    assert stale.record_check(ok=False, error="connection refused") == ("down", "down")
    [down] = events(NODE_DOWN)
    assert down.summary == "node n1 is down: connection refused"
    assert (down.node_id, down.group_key) == (node.pk, f"node:{node.pk}")
    assert down.detail["was"] == "degraded"
    assert node.record_check(ok=True, latency=0.01) == ("down", "up")
    [back] = events(NODE_BACK)
    assert back.summary == "node n1 is back (up)"
    assert back.group_key == down.group_key  # a flapping node is one group


def test_a_rejected_deploy_raises_deploy_failed(node):
    project = Project.objects.create(name="shop")
    version = Version.objects.create(
        project=project, version="7", egg=b"", sha256="0" * 64, size=0, spiders=[]
    )
    record(version, [NodeResult("n1", node.pk, False, "ImportError: no module named x")])
    record(version, [NodeResult("n1", node.pk, False, "timed out", unreachable=True)])
    record(version, [NodeResult("n1", node.pk, True, "3 spiders")])
    [failed] = events(DEPLOY_FAILED)
    assert failed.summary == "deploy of shop 7 failed on n1: ImportError: no module named x"
    assert (failed.project_id, failed.node_id) == (project.pk, node.pk)
    assert failed.group_key == f"deploy_failed:project:{project.pk}"


def test_missed_fires_raise_one_task_missed_with_the_count(db):
    project = Project.objects.create(name="crawler")
    project.current_version = Version.objects.create(
        project=project, version="1", egg=b"", sha256="0" * 64, size=0, spiders=["books"]
    )
    project.save()
    task = Task.objects.create(
        name="minutely", project=project, spider="books", cron="* * * * *", misfire_grace=60
    )
    now = timezone.now().replace(second=30, microsecond=0)
    Task.objects.filter(pk=task.pk).update(fired_through=now - timedelta(minutes=10, seconds=30))
    for replica in (Scheduler(dispatch_jobs=False), Scheduler(dispatch_jobs=False)):
        replica.sync()
        replica.fire_due(now)
    [missed] = events(TASK_MISSED)
    assert missed.summary.startswith("task minutely missed 9 fires from ")
    assert missed.detail["missed"] == 9
    assert (missed.task_id, missed.project_id) == (task.pk, project.pk)
    assert missed.group_key == f"task_missed:task:{task.pk}"


def test_a_router_that_loses_the_race_for_the_open_delivery_folds_into_it(db, monkeypatch):
    channel = services.create_channel(
        {"name": "mail", "kind": "email", "recipients": ["ops@example.com"]}
    )
    rule = services.create_rule({"name": "all", "channel": channel.name})
    raise_event(NODE_DOWN, "node n1 is down", node_id=1)
    raise_event(NODE_DOWN, "node n1 is down again", node_id=1)
    first, second = AlertEvent.objects.order_by("id")
    real = routing.first_send_time

    def another_router_wins(rule_, group, now):
        # Between this router's look for an open delivery and its insert, another router
        # opens the group's delivery with the first event.
        if not Delivery.objects.exists():
            winner = Delivery.objects.create(
                rule=rule_, channel=rule_.channel, group_key=group, event_count=1
            )
            winner.events.add(first)
        return real(rule_, group, now)

    monkeypatch.setattr(routing, "first_send_time", another_router_wins)
    routing.fold(rule, second, timezone.now())
    delivery = Delivery.objects.get()
    assert delivery.event_count == 2
    assert set(delivery.events.all()) == {first, second}
