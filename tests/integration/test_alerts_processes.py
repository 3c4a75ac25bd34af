"""Alerting across real processes: two poller replicas (each runs the alert sender in a thread)
share the database and race for the same deliveries; a real Scrapyd node goes down; email goes
through Django's file backend in ``crawlfleet alerts --once``."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from django.utils import timezone

from controlplane.alerts import services, transports
from controlplane.alerts.models import AlertEvent, Delivery
from controlplane.events import NODE_DOWN
from controlplane.nodes.models import Node
from tests.fixtures.common import VENV_BIN, wait_until

SECRET = "replica-race-signing-secret"
FAST_ALERTS = {"CRAWLFLEET_ALERT_INTERVAL": "0.2"}


def signed_by(request, secret: str = SECRET) -> bool:
    headers = request.headers
    return transports.verify(
        secret, headers["x-crawlfleet-timestamp"], request.body, headers["x-crawlfleet-signature"]
    )


def settled() -> bool:
    """Every event routed and every delivery done."""
    return (
        not AlertEvent.objects.filter(routed_at__isnull=True).exists()
        and not Delivery.objects.filter(state__in=["pending", "sending"]).exists()
    )


@pytest.fixture
def hook(transactional_db, webhook_receiver):
    channel = services.create_channel(
        {"name": "hook", "kind": "webhook", "url": webhook_receiver.url + "/in", "secret": SECRET}
    )
    services.create_rule({"name": "everything", "channel": channel.name, "cooldown": 0})
    return webhook_receiver


def test_two_replicas_race_for_queued_events_and_send_each_once(hook, cp_process):
    now = timezone.now()
    AlertEvent.objects.bulk_create(
        AlertEvent(
            kind=NODE_DOWN,
            summary=f"node n{i % 12} is down",
            group_key=f"node:{i % 12}",
            node_id=i % 12,
            created_at=now,
        )
        for i in range(60)
    )
    cp_process("poller", name="poller-a", env=FAST_ALERTS)
    cp_process("poller", name="poller-b", env=FAST_ALERTS)
    wait_until(lambda: len(hook.ok()) >= 12 and settled(), 60, "12 sent deliveries")
    requests = hook.all()
    ids = Counter(r.headers["x-crawlfleet-delivery"] for r in requests)
    assert len(requests) == 12, ids
    assert set(ids.values()) == {1}  # no delivery was sent twice
    assert all(signed_by(r) for r in requests)
    deliveries = list(Delivery.objects.all())
    assert sorted(d.event_count for d in deliveries) == [5] * 12
    assert {(d.state, d.attempts) for d in deliveries} == {("sent", 1)}
    assert sum(Delivery.objects.get(pk=d.pk).history.count() for d in deliveries) == 12


@pytest.mark.scrapyd
def test_a_node_that_goes_down_is_alerted_once_by_two_pollers(hook, cp_process, scrapyd_node):
    node = Node.objects.create(name="alerted-node", url=scrapyd_node.url, state=Node.State.UP)
    cp_process("poller", name="poller-a", env=FAST_ALERTS)
    cp_process("poller", name="poller-b", env=FAST_ALERTS)
    wait_until(
        lambda: Node.objects.filter(pk=node.pk, last_checked__isnull=False).exists(),
        30,
        "a health check",
    )
    scrapyd_node.stop()
    wait_until(lambda: hook.ok() and settled(), 60, "the node_down alert")
    [request] = hook.all()
    assert signed_by(request)
    body = request.json
    assert body["events"][0]["kind"] == NODE_DOWN
    assert body["subject"].startswith("[crawlfleet] node alerted-node is down")
    assert AlertEvent.objects.filter(kind=NODE_DOWN).count() == 1  # one flip, one event
    assert Delivery.objects.get().state == "sent"


def test_email_through_the_file_backend_in_a_subprocess(transactional_db, cp_env, tmp_path):
    channel = services.create_channel(
        {"name": "mail", "kind": "email", "recipients": ["oncall@example.com"]}
    )
    services.create_rule({"name": "mail-all", "channel": channel.name})
    AlertEvent.objects.create(
        kind=NODE_DOWN, summary="node n1 is down: connection refused", group_key="node:1", node_id=1
    )
    outbox = tmp_path / "outbox"
    env = {
        **cp_env,
        "CRAWLFLEET_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(outbox),
        "DEFAULT_FROM_EMAIL": "fleet@example.com",
        "CRAWLFLEET_PUBLIC_URL": "https://fleet.example.com",
    }
    done = subprocess.run(
        [str(VENV_BIN / "crawlfleet"), "alerts", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [mail_file] = list(outbox.iterdir())
    text = mail_file.read_text()
    assert "To: oncall@example.com" in text
    assert "From: fleet@example.com" in text
    assert "Subject: [crawlfleet] node n1 is down: connection refused" in text
    assert "https://fleet.example.com/dashboard/nodes/1/" in text
    assert Delivery.objects.get().state == "sent"
