"""The alerting REST API: roles, validation with per-field messages and nothing stored on bad
input, write-only secrets (never in an answer or the audit trail), the delivery history."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from controlplane.accounts.models import AuditEntry
from controlplane.alerts.models import AlertRule, Channel, Delivery
from controlplane.events import NODE_DOWN, raise_event
from controlplane.loops.alerter import Alerter
from tests.integration.test_api import Api, token

SECRET = "hmac-key-that-must-never-leak-0123"
APPRISE_TOKEN = "tok3nNeverShown987"


@pytest.fixture
def admin(db) -> Api:
    return Api(token("admin"))


@pytest.fixture
def viewer(db) -> Api:
    return Api(token("viewer"))


def add_webhook(admin: Api, url: str = "https://hooks.example.com/in", **extra) -> dict:
    answer = admin.post(
        "/alerts/channels",
        {"name": "hook", "kind": "webhook", "url": url, "secret": SECRET, **extra},
    )
    assert answer.status_code == 201, answer.content
    return answer.json()


def everything_said(admin: Api) -> str:
    """Every answer about channels, and the whole audit trail, as one text."""
    texts = [admin.get("/alerts/channels").content.decode()]
    texts += [admin.get(f"/alerts/channels/{c.pk}").content.decode() for c in Channel.objects.all()]
    texts += [json.dumps(list(AuditEntry.objects.values("action", "target", "detail")))]
    return "\n".join(texts)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "webhook", "url": "ftp://hooks.example.com/x"}, "url", "http"),
        ({"kind": "webhook", "url": "javascript:alert(1)"}, "url", "http"),
        ({"kind": "webhook", "url": "https://h.example/x", "secret": "short"}, "secret", "16"),
        (
            {"kind": "apprise", "apprise_urls": [f"nosuchservice://{APPRISE_TOKEN}"]},
            "apprise_urls",
            "scheme",
        ),
        ({"kind": "apprise", "apprise_urls": []}, "apprise_urls", "one or more"),
        (
            {"kind": "email", "recipients": ["ops@example.com", "not-an-address"]},
            "recipients",
            "not-an-address",
        ),
        ({"kind": "email", "recipients": []}, "recipients", "one or more"),
        ({"kind": "carrier-pigeon"}, "kind", "webhook"),
        (
            {"kind": "webhook", "url": "https://h.example/x", "name": "bad name!"},
            "name",
            "valid name",
        ),
    ],
)
def test_bad_channels_are_refused_and_nothing_is_stored(admin, body, field, words):
    answer = admin.post("/alerts/channels", {"name": "ch", **body})
    assert answer.status_code == 422, answer.content
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert words in " ".join(error["fields"][field])
    assert APPRISE_TOKEN not in answer.content.decode()  # an apprise URL is a secret
    assert Channel.objects.count() == 0
    assert AuditEntry.objects.filter(action__startswith="alerts.").count() == 0


def test_a_taken_channel_name_is_a_conflict(admin):
    add_webhook(admin)
    again = admin.post(
        "/alerts/channels", {"name": "hook", "kind": "email", "recipients": ["a@b.co"]}
    )
    assert again.status_code == 409
    assert "name" in again.json()["error"]["fields"]
    assert Channel.objects.count() == 1


def test_secrets_are_write_only(admin):
    created = add_webhook(admin)
    assert created["signed"] is True
    assert "secret" not in created
    chat = admin.post(
        "/alerts/channels",
        {"name": "chat", "kind": "apprise", "apprise_urls": [f"json://localhost/{APPRISE_TOKEN}"]},
    )
    assert chat.status_code == 201, chat.content
    assert chat.json()["apprise_schemes"] == ["json"]
    assert chat.json()["apprise_url_count"] == 1
    # A PATCH without the secret keeps it; one with a new secret replaces it, unseen.
    patched = admin.patch(f"/alerts/channels/{created['id']}", {"url": "https://other.example/in"})
    assert patched.status_code == 200, patched.content
    assert Channel.objects.get(pk=created["id"]).secret == SECRET
    renewed = admin.patch(f"/alerts/channels/{created['id']}", {"secret": "x" * 20 + "renewed"})
    assert renewed.status_code == 200
    assert Channel.objects.get(pk=created["id"]).secret == "x" * 20 + "renewed"
    said = everything_said(admin)
    for secret in (SECRET, APPRISE_TOKEN, "renewed"):
        assert secret not in said
    update = AuditEntry.objects.filter(action="alerts.update_channel").order_by("-id").first()
    assert update.detail["changes"]["secret"] == "(hidden)"


def test_channels_are_for_admins_deliveries_for_viewers(admin, viewer):
    add_webhook(admin)
    assert viewer.get("/alerts/channels").status_code == 403
    assert viewer.post("/alerts/channels", {"name": "x", "kind": "email"}).status_code == 403
    assert viewer.get("/alerts/deliveries").status_code == 200
    assert viewer.get("/alerts/rules").status_code == 200
    assert viewer.post("/alerts/rules", {"name": "r", "channel": "hook"}).status_code == 403


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"event_kinds": ["node_down", "node_on_fire"]}, "event_kinds", "node_on_fire"),
        ({"cooldown": -5}, "cooldown", "between 0"),
        ({"channel": "no-such-channel"}, "channel", "no channel"),
        ({"project": "no-such-project"}, "project", "no project"),
        ({"quiet_start": "22:00"}, "quiet_end", "both"),
        ({"quiet_start": "25:99", "quiet_end": "07:00"}, "quiet_start", "22:00"),
        (
            {"quiet_start": "22:00", "quiet_end": "07:00", "quiet_timezone": "Mars/Base"},
            "quiet_timezone",
            "unknown",
        ),
    ],
)
def test_bad_rules_are_refused_and_nothing_is_stored(admin, body, field, words):
    add_webhook(admin)
    answer = admin.post("/alerts/rules", {"name": "r1", "channel": "hook", **body})
    assert answer.status_code == 422, answer.content
    assert words in " ".join(answer.json()["error"]["fields"][field])
    assert AlertRule.objects.count() == 0


def test_rules_round_trip_and_a_bad_patch_changes_nothing(admin):
    add_webhook(admin)
    created = admin.post(
        "/alerts/rules",
        {
            "name": "nights",
            "channel": "hook",
            "event_kinds": ["node_down", "node_back"],
            "cooldown": 300,
            "quiet_start": "22:00",
            "quiet_end": "07:00",
            "quiet_timezone": "Europe/Paris",
        },
    )
    assert created.status_code == 201, created.content
    rule = created.json()
    assert (rule["channel"], rule["quiet_start"], rule["quiet_end"]) == ("hook", "22:00", "07:00")
    bad = admin.patch(f"/alerts/rules/{rule['id']}", {"cooldown": -1, "name": "renamed"})
    assert bad.status_code == 422
    stored = AlertRule.objects.get()
    assert (stored.name, stored.cooldown) == ("nights", 300)
    good = admin.patch(
        f"/alerts/rules/{rule['id']}", {"event_kinds": [], "quiet_start": None, "quiet_end": None}
    )
    assert good.status_code == 200, good.content
    assert good.json()["event_kinds"] == []
    assert good.json()["quiet_start"] is None
    assert admin.delete(f"/alerts/rules/{rule['id']}").status_code == 204
    assert AlertRule.objects.count() == 0
    actions = list(
        AuditEntry.objects.filter(action__startswith="alerts.")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "alerts.add_channel",
        "alerts.add_rule",
        "alerts.update_rule",
        "alerts.delete_rule",
    ]


def test_delivery_history_pages_and_filters(admin, viewer, webhook_receiver):
    add_webhook(admin, url=webhook_receiver.url + "/in")
    assert (
        admin.post("/alerts/rules", {"name": "all", "channel": "hook", "cooldown": 0}).status_code
        == 201
    )
    for node in range(5):
        raise_event(NODE_DOWN, f"node n{node} is down", node_id=node)
    Alerter().cycle()
    first = viewer.get("/alerts/deliveries?limit=2")
    assert first.status_code == 200
    page = first.json()
    assert len(page["items"]) == 2
    assert page["items"][0]["history"][0]["ok"] is True
    assert page["items"][0]["channel_kind"] == "webhook"
    seen = [d["id"] for d in page["items"]]
    while page["next_cursor"]:
        page = viewer.get(f"/alerts/deliveries?limit=2&cursor={quote(page['next_cursor'])}").json()
        seen += [d["id"] for d in page["items"]]
    assert sorted(seen) == sorted(Delivery.objects.values_list("pk", flat=True))
    assert len(seen) == 5
    assert viewer.get("/alerts/deliveries?cursor=page-two").status_code == 400
    assert viewer.get("/alerts/deliveries?state=failed").json()["items"] == []
    assert len(viewer.get("/alerts/deliveries?state=sent&channel=hook").json()["items"]) == 5
    assert viewer.get("/alerts/deliveries?state=bogus").status_code == 422
    assert viewer.get("/alerts/deliveries?channel=nope").status_code == 404


def test_test_alert_action(admin, webhook_receiver):
    channel = add_webhook(admin, url=webhook_receiver.url + "/t")
    answer = admin.post(f"/alerts/channels/{channel['id']}/test")
    assert answer.status_code == 200, answer.content
    assert (answer.json()["state"], answer.json()["test"]) == ("sent", True)
    assert len(webhook_receiver.ok()) == 1
    assert AuditEntry.objects.filter(action="alerts.test_channel").count() == 1
