"""Alerting in-process: events raised, routed, grouped, held and sent through real channels (a
local HTTP receiver for webhooks and apprise's json://, Django's locmem mail backend).

The sender's cycle runs in the test with ``now`` passed in, so cooldowns, retries and quiet
hours are checked without sleeping.
"""

from __future__ import annotations

from datetime import time as clock
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from controlplane.alerts import routing, sending, services, transports
from controlplane.alerts.models import AlertEvent, AlertRule, Channel, Delivery
from controlplane.alerts.quiet import quiet_until
from controlplane.deploys.models import Project
from controlplane.events import NODE_BACK, NODE_DOWN, TASK_MISSED, raise_event
from controlplane.loops.alerter import Alerter
from tests.fixtures.taskpages import make_task

SECRET = "a-signing-secret-of-some-length"


@pytest.fixture
def fast_retries(settings):
    settings.CRAWLFLEET_ALERT_RETRY_BASE = 10.0
    settings.CRAWLFLEET_ALERT_MAX_ATTEMPTS = 4
    settings.CRAWLFLEET_PUBLIC_URL = "http://cp.example:8000"
    return settings


def webhook(receiver, name: str = "hook", path: str = "/hook") -> Channel:
    return services.create_channel(
        {"name": name, "kind": "webhook", "url": receiver.url + path, "secret": SECRET}
    )


def rule(channel: Channel, **fields) -> AlertRule:
    return services.create_rule({"name": f"to-{channel.name}", "channel": channel.name, **fields})


def node_event(kind: str = NODE_DOWN, node_id: int = 7, name: str = "node-2") -> None:
    verb = "is down: connection refused" if kind == NODE_DOWN else "is back (up)"
    raise_event(kind, f"node {name} {verb}", node_id=node_id, group=f"node:{node_id}")


def test_webhook_is_signed_and_sent_once(db, webhook_receiver, fast_retries):
    rule(webhook(webhook_receiver))
    node_event()
    assert AlertEvent.objects.filter(routed_at__isnull=True).count() == 1
    alerter = Alerter()
    result = alerter.cycle()
    assert (result.routed, result.sending.sent) == (1, 1)
    alerter.cycle(timezone.now() + timedelta(hours=1))  # nothing more to send
    [request] = webhook_receiver.all()
    headers = request.headers
    assert request.path == "/hook"
    assert transports.verify(
        SECRET,
        headers["x-crawlfleet-timestamp"],
        request.body,
        headers["x-crawlfleet-signature"],
    )
    assert not transports.verify(
        "another-secret-entirely",
        headers["x-crawlfleet-timestamp"],
        request.body,
        headers["x-crawlfleet-signature"],
    )
    delivery = Delivery.objects.get()
    assert headers["x-crawlfleet-delivery"] == str(delivery.uid)
    assert headers["x-crawlfleet-event"] == NODE_DOWN
    body = request.json
    assert body["subject"] == "[crawlfleet] node node-2 is down: connection refused"
    assert body["events"][0]["links"] == ["http://cp.example:8000/dashboard/nodes/7/"]
    assert "http://cp.example:8000/dashboard/nodes/7/" in body["text"]
    assert (delivery.state, delivery.attempts, delivery.history.count()) == ("sent", 1, 1)


def test_failing_receiver_gets_the_alert_on_the_third_try(db, webhook_receiver, fast_retries):
    rule(webhook(webhook_receiver))
    webhook_receiver.fail_first = 2
    node_event()
    alerter = Alerter()
    now = timezone.now()
    alerter.cycle(now)
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.attempts) == ("pending", 1)
    assert "HTTP 500" in delivery.last_error
    first_retry = delivery.not_before
    assert first_retry == now + timedelta(seconds=10)
    assert alerter.cycle(now + timedelta(seconds=5)).sending.sent == 0  # not due yet
    alerter.cycle(first_retry)
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.not_before == first_retry + timedelta(seconds=20)  # the wait doubles
    alerter.cycle(delivery.not_before)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("sent", 3, "")
    history = list(delivery.history.values_list("number", "ok"))
    assert history == [(1, False), (2, False), (3, True)]
    assert [r.status for r in webhook_receiver.all()] == [500, 500, 200]
    uids = {r.headers["x-crawlfleet-delivery"] for r in webhook_receiver.all()}
    assert uids == {str(delivery.uid)}  # the same id on every retry: receivers de-duplicate


def test_delivery_fails_after_the_last_attempt(db, webhook_receiver, fast_retries):
    rule(webhook(webhook_receiver))
    webhook_receiver.fail_first = 100
    node_event()
    alerter, now = Alerter(), timezone.now()
    for _ in range(6):
        alerter.cycle(now)
        now += timedelta(hours=1)
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.attempts, delivery.history.count()) == ("failed", 4, 4)
    assert len(webhook_receiver.all()) == 4


def test_a_flapping_node_sends_one_alert_and_one_digest(db, webhook_receiver, fast_retries):
    rule(webhook(webhook_receiver), cooldown=600)
    alerter, now = Alerter(), timezone.now()
    for i in range(10):
        node_event(NODE_DOWN)
        node_event(NODE_BACK)
        if i == 0:
            alerter.cycle(now)  # the first goes out at once
    alerter.cycle(now + timedelta(seconds=1))
    assert len(webhook_receiver.ok()) == 1
    deliveries = list(Delivery.objects.order_by("created_at", "id"))
    assert [(d.state, d.event_count, d.digest) for d in deliveries] == [
        ("sent", 2, False),
        ("pending", 18, True),
    ]
    digest = deliveries[1]
    assert digest.not_before == deliveries[0].sent_at + timedelta(seconds=600)
    alerter.cycle(digest.not_before)
    assert len(webhook_receiver.ok()) == 2
    subject = webhook_receiver.ok()[1].json["subject"]
    assert subject.startswith("[crawlfleet] node node-2 is back (up) (and 17 more: ")
    assert "(and 17 more: 9 node_down, 8 node_back since " in subject
    assert Delivery.objects.count() == 2


def test_events_are_routed_by_project_task_and_kind(db, webhook_receiver, task_project):
    project = task_project
    task = make_task(project)
    other = Project.objects.create(name="other")
    channel = webhook(webhook_receiver)
    services.create_rule(
        {"name": "missed-only", "channel": channel.name, "event_kinds": [TASK_MISSED]}
    )
    services.create_rule({"name": "this-task", "channel": channel.name, "task": task.name})
    services.create_rule({"name": "other-project", "channel": channel.name, "project": "other"})
    raise_event(TASK_MISSED, "task t missed 3 fires", project_id=project.pk, task_id=task.pk)
    raise_event(TASK_MISSED, "task x missed 1 fire", project_id=other.pk, task_id=task.pk + 1)
    node_event()
    Alerter().cycle()
    routed = set(Delivery.objects.values_list("rule__name", "group_key"))
    assert routed == {
        ("missed-only", f"task_missed:task:{task.pk + 1}"),
        ("missed-only", f"task_missed:task:{task.pk}"),
        ("other-project", f"task_missed:task:{task.pk + 1}"),
        ("this-task", f"task_missed:task:{task.pk}"),
    }


def test_quiet_hours_hold_alerts_until_they_end(db, webhook_receiver, fast_retries):
    now = timezone.now().replace(second=0, microsecond=0)
    start = (now - timedelta(hours=1)).time()
    end = (now + timedelta(hours=1)).time()
    channel = webhook(webhook_receiver)
    rule(channel, quiet_start=start.isoformat("minutes"), quiet_end=end.isoformat("minutes"))
    node_event(node_id=1, name="node-1")
    node_event(node_id=2, name="node-2")
    alerter = Alerter()
    alerter.cycle(now)
    assert webhook_receiver.all() == []
    held = Delivery.objects.get()
    ends = quiet_until(start, end, "UTC", now)
    assert held.not_before == ends
    assert held.event_count == 2
    alerter.cycle(ends - timedelta(seconds=1))
    assert webhook_receiver.all() == []
    alerter.cycle(ends)
    [request] = webhook_receiver.all()
    assert request.json["subject"].startswith("[crawlfleet] 2 alert(s) held during quiet hours")


def test_quiet_period_wraps_midnight_in_its_timezone():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    late = datetime(2026, 3, 10, 23, 30, tzinfo=paris)
    early = datetime(2026, 3, 11, 6, 0, tzinfo=paris)
    noon = datetime(2026, 3, 11, 12, 0, tzinfo=paris)
    start, end = clock(22, 0), clock(7, 0)
    assert quiet_until(start, end, "Europe/Paris", late) == datetime(
        2026, 3, 11, 7, 0, tzinfo=paris
    )
    assert quiet_until(start, end, "Europe/Paris", early) == datetime(
        2026, 3, 11, 7, 0, tzinfo=paris
    )
    assert quiet_until(start, end, "Europe/Paris", noon) is None


def test_email_through_the_locmem_backend(db, fast_retries):
    channel = services.create_channel(
        {"name": "ops-mail", "kind": "email", "recipients": ["ops@example.com", "b@example.org"]}
    )
    rule(channel)
    node_event()
    Alerter().cycle()
    [message] = mail.outbox
    assert message.to == ["ops@example.com", "b@example.org"]
    assert message.subject == "[crawlfleet] node node-2 is down: connection refused"
    assert "http://cp.example:8000/dashboard/nodes/7/" in message.body
    assert Delivery.objects.get().state == "sent"


def test_a_multiline_summary_makes_a_one_line_subject(db, fast_retries):
    rule(services.create_channel({"name": "m", "kind": "email", "recipients": ["a@example.com"]}))
    raise_event(NODE_DOWN, "node n1 is down: Traceback\n  line 2\r\nboom", node_id=1)
    Alerter().cycle()
    [message] = mail.outbox
    assert message.subject == "[crawlfleet] node n1 is down: Traceback line 2 boom"
    assert Delivery.objects.get().state == "sent"


def test_apprise_json_url_reaches_the_receiver(db, webhook_receiver, fast_retries):
    target = webhook_receiver.url.replace("http://", "json://") + "/apprise-path"
    channel = services.create_channel({"name": "chat", "kind": "apprise", "apprise_urls": [target]})
    rule(channel)
    node_event()
    Alerter().cycle()
    [request] = webhook_receiver.ok()
    assert request.path == "/apprise-path"
    assert request.json["title"] == "[crawlfleet] node node-2 is down: connection refused"
    assert "node node-2 is down" in request.json["message"]
    assert Delivery.objects.get().state == "sent"


def test_send_test_alert(db, webhook_receiver, fast_retries):
    channel = webhook(webhook_receiver)
    delivery = services.send_test(channel)
    assert (delivery.state, delivery.test) == ("sent", True)
    [request] = webhook_receiver.ok()
    assert request.json["test"] is True
    webhook_receiver.fail_first = 1
    failed = services.send_test(channel)
    failed.refresh_from_db()
    assert failed.state == "failed"
    assert "HTTP 500" in failed.last_error


def test_stale_claim_is_taken_over(db, webhook_receiver, fast_retries):
    rule(webhook(webhook_receiver))
    node_event()
    now = timezone.now()
    routing.route_batch(now)
    delivery = Delivery.objects.get()
    # A sender claimed it and died mid-send.
    Delivery.objects.filter(pk=delivery.pk).update(state="sending", claimed_at=now, attempts=1)
    assert Alerter().cycle(now + timedelta(seconds=60)).sending.taken_over == 0
    result = Alerter().cycle(
        now + timedelta(seconds=fast_retries.CRAWLFLEET_ALERT_CLAIM_TIMEOUT + 1)
    )
    assert (result.sending.taken_over, result.sending.sent) == (1, 1)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("sent", 2)


def test_events_during_a_send_join_the_retried_delivery(db, webhook_receiver, fast_retries):
    """A retry that finds a newer open delivery of its group takes its events along."""
    rule(webhook(webhook_receiver), cooldown=0)
    now = timezone.now()
    node_event()
    routing.route_batch(now)
    first = Delivery.objects.get()
    Delivery.objects.filter(pk=first.pk).update(state="sending", claimed_at=now, attempts=1)
    node_event(NODE_BACK)
    routing.route_batch(now)
    assert Delivery.objects.filter(state="pending").count() == 1
    first.refresh_from_db()
    assert sending.retry_later(first, now, now + timedelta(seconds=10), "HTTP 500", "")
    first.refresh_from_db()
    assert (first.state, first.event_count, first.events.count()) == ("pending", 2, 2)
    assert Delivery.objects.count() == 1


def test_a_failed_apprise_call_says_why_without_its_token(db, fast_retries):
    from controlplane.lib.procutil import free_port

    token = "s3cretChatToken42"
    dead = f"json://user:{token}@127.0.0.1:{free_port()}/hooks/{token}"
    channel = services.create_channel({"name": "chat", "kind": "apprise", "apprise_urls": [dead]})
    rule(channel)
    node_event()
    Alerter().cycle()
    delivery = Delivery.objects.get()
    assert delivery.state == "pending"
    assert delivery.last_error.startswith("apprise: not delivered: A Connection error")
    assert "127.0.0.1" in delivery.last_error
    assert token not in delivery.last_error
    assert token not in delivery.history.get().error
