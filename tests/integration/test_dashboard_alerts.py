"""The alerts pages in-process: roles (viewers read, admins change), refusals beside the fields with
nothing stored, write-only secrets (never in any page), audit entries, and the delivery history
(keyset pages, filters, a delivery's events and attempts)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts.models import AuditEntry
from controlplane.alerts import services
from controlplane.alerts.models import AlertEvent, AlertRule, Channel, Delivery, DeliveryAttempt
from controlplane.events import JOB_FAILED, NODE_DOWN
from tests.fixtures.dashboard import logged_in_client

SECRET = "hmac-key-that-must-never-leak-0123"
APPRISE_TOKEN = "tok3nNeverShown987"
WEBHOOK_PATH_TOKEN = "pathTokenNeverShown55"


def webhook(name: str = "hook", **extra) -> Channel:
    return services.create_channel(
        {
            "name": name,
            "kind": "webhook",
            "url": f"https://hooks.example.com/in/{WEBHOOK_PATH_TOKEN}",
            "secret": SECRET,
            **extra,
        }
    )


def apprise_channel() -> Channel:
    return services.create_channel(
        {"name": "chat", "kind": "apprise", "apprise_urls": [f"json://localhost/{APPRISE_TOKEN}"]}
    )


def pages_text(client, channels: list[Channel], rules: list[AlertRule] = ()) -> str:
    urls = [reverse("dashboard:alerts"), reverse("dashboard:alert_deliveries")]
    urls += [reverse("dashboard:alert_channel_edit", args=[c.pk]) for c in channels]
    urls += [reverse("dashboard:alert_rule_edit", args=[r.pk]) for r in rules]
    urls += [reverse("dashboard:alert_delivery", args=[d.pk]) for d in Delivery.objects.all()]
    texts = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        texts.append(response.content.decode())
    return "\n".join(texts)


def test_a_viewer_reads_without_forms_or_secrets_and_is_refused_every_change(
    client, dashboard_users
):
    hook, chat = webhook(), apprise_channel()
    rule = services.create_rule({"name": "nodes", "channel": "hook", "event_kinds": [NODE_DOWN]})
    logged_in_client(client, dashboard_users["viewer"])
    page = client.get(reverse("dashboard:alerts")).content.decode()
    assert "hook" in page
    assert "https://hooks.example.com" in page
    assert "json" in page
    assert "nodes" in page
    assert NODE_DOWN in page
    assert '<form method="post" action="/alerts' not in page
    assert "Send test alert" not in page
    assert "Add rule" not in page
    assert "Edit" not in page
    for name in ("alert_channel_edit", "alert_rule_edit"):
        target = hook.pk if "channel" in name else rule.pk
        assert client.get(reverse(f"dashboard:{name}", args=[target])).status_code == 403
    assert client.get(reverse("dashboard:alert_channel_add", args=["webhook"])).status_code == 403
    posts = [
        (
            reverse("dashboard:alert_channel_add", args=["webhook"]),
            {"name": "x", "url": "https://a.b"},
        ),
        (
            reverse("dashboard:alert_channel_edit", args=[hook.pk]),
            {"name": "x", "url": "https://a.b"},
        ),
        (reverse("dashboard:alert_channel_delete", args=[hook.pk]), {}),
        (reverse("dashboard:alert_channel_test", args=[hook.pk]), {}),
        (reverse("dashboard:alert_rule_add"), {"name": "r", "channel": "hook", "cooldown": 1}),
        (reverse("dashboard:alert_rule_edit", args=[rule.pk]), {"name": "r", "channel": "hook"}),
        (reverse("dashboard:alert_rule_delete", args=[rule.pk]), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert not Delivery.objects.exists()
    assert sorted(Channel.objects.values_list("name", flat=True)) == ["chat", "hook"]
    assert list(AlertRule.objects.values_list("name", flat=True)) == ["nodes"]
    viewer = dashboard_users["viewer"].username
    assert not AuditEntry.objects.filter(actor=viewer, action__startswith="alerts.").exists()
    text = pages_text(client, [])
    for secret in (SECRET, APPRISE_TOKEN, WEBHOOK_PATH_TOKEN):
        assert secret not in text
    assert chat.apprise_urls  # stored, just never shown


def test_anonymous_users_are_sent_to_log_in(client, db):
    for name in ("alerts", "alert_deliveries", "alert_rule_add"):
        response = client.get(reverse(f"dashboard:{name}"))
        assert response.status_code == 302
        assert "/login/" in response["Location"]


@pytest.mark.parametrize(
    ("kind", "data", "field", "words"),
    [
        ("webhook", {"url": "ftp://hooks.example.com/x"}, "url", "http:// or https://"),
        ("webhook", {"url": "https://h.example/x", "secret": "short"}, "secret", "16"),
        ("email", {"recipients": "ops@example.com\nnot-an-address"}, "recipients", "not a valid"),
        (
            "apprise",
            {"apprise_urls": f"nosuchservice://{APPRISE_TOKEN}"},
            "apprise_urls",
            "scheme 'nosuchservice'",
        ),
        ("webhook", {"name": "bad name!", "url": "https://h.example/x"}, "name", ""),
    ],
)
def test_bad_channels_are_refused_beside_the_field_and_nothing_is_stored(
    client, dashboard_users, kind, data, field, words
):
    logged_in_client(client, dashboard_users["admin"])
    response = client.post(
        reverse("dashboard:alert_channel_add", args=[kind]), {"name": "c1", **data}
    )
    assert response.status_code == 422
    page = response.content.decode()
    assert f'id="{field}-error"' in page
    assert words in response.context["form"].errors[field][0]
    assert not Channel.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="alerts.").exists()
    assert APPRISE_TOKEN not in page  # a refused apprise URL is not echoed back
    assert data.get("secret", "no secret typed") not in page


def test_an_admin_adds_edits_tests_and_deletes_a_webhook_channel_with_a_write_only_secret(
    client, dashboard_users
):
    logged_in_client(client, dashboard_users["admin"])
    url = f"http://127.0.0.1:9/in/{WEBHOOK_PATH_TOKEN}"  # port 9: nothing listens
    response = client.post(
        reverse("dashboard:alert_channel_add", args=["webhook"]),
        {"name": "hook", "url": url, "secret": SECRET, "enabled": "on"},
    )
    assert response.status_code == 302
    hook = Channel.objects.get()
    assert (hook.kind, hook.url, hook.secret, hook.enabled) == ("webhook", url, SECRET, True)

    edit = reverse("dashboard:alert_channel_edit", args=[hook.pk])
    page = client.get(edit).content.decode()
    assert "a secret is set" in page
    assert "leave empty to keep it" in page
    assert SECRET not in page
    # An empty secret keeps the stored one; a refused edit echoes no secret either.
    response = client.post(edit, {"name": "hook", "url": url, "secret": ""})
    assert response.status_code == 302
    hook.refresh_from_db()
    assert (hook.secret, hook.enabled) == (SECRET, False)
    response = client.post(
        edit, {"name": "hook", "url": "mailto:x", "secret": "another-long-secret-9"}
    )
    assert response.status_code == 422
    assert "another-long-secret-9" not in response.content.decode()
    hook.refresh_from_db()
    assert (hook.url, hook.secret) == (url, SECRET)
    response = client.post(
        edit, {"name": "hook", "url": url, "clear_secret": "on", "enabled": "on"}
    )
    assert response.status_code == 302
    hook.refresh_from_db()
    assert (hook.secret, hook.enabled) == ("", True)

    response = client.post(reverse("dashboard:alert_channel_test", args=[hook.pk]), follow=True)
    said = [str(m) for m in response.context["messages"]]
    assert said[-1].startswith("Test alert to hook (http://127.0.0.1:9) failed")
    assert WEBHOOK_PATH_TOKEN not in response.content.decode()
    delivery = Delivery.objects.get()
    assert (delivery.test, delivery.state, delivery.attempts) == (True, "failed", 1)

    response = client.post(reverse("dashboard:alert_channel_delete", args=[hook.pk]))
    assert response.status_code == 302
    assert not Channel.objects.exists()
    assert not Delivery.objects.exists()
    actions = list(
        AuditEntry.objects.filter(action__startswith="alerts.")
        .order_by("pk")
        .values_list("action", "actor", "target")
    )
    admin = dashboard_users["admin"].username
    assert actions == [
        ("alerts.add_channel", admin, "hook"),
        ("alerts.update_channel", admin, "hook"),
        ("alerts.update_channel", admin, "hook"),
        ("alerts.test_channel", admin, "hook"),
        ("alerts.delete_channel", admin, "hook"),
    ]
    assert SECRET not in json.dumps(list(AuditEntry.objects.values("detail")))


def test_apprise_and_email_channels_keep_their_urls_unless_new_ones_are_given(
    client, dashboard_users
):
    logged_in_client(client, dashboard_users["admin"])
    response = client.post(
        reverse("dashboard:alert_channel_add", args=["apprise"]),
        {"name": "chat", "apprise_urls": f"json://localhost/{APPRISE_TOKEN}\n", "enabled": "on"},
    )
    assert response.status_code == 302
    chat = Channel.objects.get(name="chat")
    edit = reverse("dashboard:alert_channel_edit", args=[chat.pk])
    page = client.get(edit).content.decode()
    assert "1 URL(s) set (json)" in page
    assert APPRISE_TOKEN not in page
    assert client.post(edit, {"name": "chat-room", "apprise_urls": ""}).status_code == 302
    chat.refresh_from_db()
    assert (chat.name, chat.apprise_urls) == ("chat-room", [f"json://localhost/{APPRISE_TOKEN}"])

    response = client.post(
        reverse("dashboard:alert_channel_add", args=["email"]),
        {"name": "ops", "recipients": "a@example.com, b@example.com", "enabled": "on"},
    )
    assert response.status_code == 302
    assert Channel.objects.get(name="ops").recipients == ["a@example.com", "b@example.com"]
    page = client.get(reverse("dashboard:alerts")).content.decode()
    assert "a@example.com, b@example.com" in page
    assert APPRISE_TOKEN not in page


def test_rules_are_added_edited_and_deleted_and_refused_beside_their_fields(
    client, dashboard_users
):
    webhook()
    logged_in_client(client, dashboard_users["admin"])
    page = client.get(reverse("dashboard:alert_rule_add")).content.decode()
    assert "a node stopped answering" in page
    assert 'value="node_down"' in page
    add = reverse("dashboard:alert_rule_add")
    bad = {
        "name": "r1",
        "channel": "hook",
        "event_kinds": ["node_down", "no_such_kind"],
        "cooldown": "600",
        "quiet_start": "22:00",
        "quiet_timezone": "Mars/Olympus",
    }
    response = client.post(add, bad)
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert "unknown event kind(s) 'no_such_kind'" in errors["event_kinds"][0]
    assert "unknown timezone" in errors["quiet_timezone"][0]
    assert "both the start and the end" in errors["quiet_end"][0]
    text = response.content.decode()
    assert 'id="event_kinds-error"' in text
    assert 'id="quiet_timezone-error"' in text
    assert not AlertRule.objects.exists()

    good = {**bad, "event_kinds": ["node_down", "job_failed"], "quiet_end": "07:00"}
    good.update(quiet_timezone="Europe/Paris", enabled="on")
    assert client.post(add, good).status_code == 302
    rule = AlertRule.objects.get()
    assert rule.event_kinds == ["job_failed", "node_down"]
    assert (rule.quiet_start.hour, rule.quiet_end.hour, rule.quiet_timezone) == (
        22,
        7,
        "Europe/Paris",
    )

    edit = reverse("dashboard:alert_rule_edit", args=[rule.pk])
    page = client.get(edit).content.decode()
    assert 'id="kind-node_down" checked' in page
    assert 'id="kind-node_back">' in page
    response = client.post(edit, {"name": "r1", "channel": "hook", "cooldown": "-5"})
    assert response.status_code == 422
    assert "between 0 and" in response.context["form"].errors["cooldown"][0]
    response = client.post(edit, {"name": "r1", "channel": "nosuch", "cooldown": "60"})
    assert response.status_code == 422
    assert "no channel named 'nosuch'" in response.context["form"].errors["channel"][0]
    rule.refresh_from_db()
    assert rule.cooldown == 600
    response = client.post(edit, {"name": "r1", "channel": "hook", "cooldown": "60"})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.cooldown, rule.event_kinds, rule.quiet_start, rule.enabled) == (
        60,
        [],
        None,
        False,
    )
    page = client.get(reverse("dashboard:alerts")).content.decode()
    assert "every kind" in page

    assert client.post(reverse("dashboard:alert_rule_delete", args=[rule.pk])).status_code == 302
    assert not AlertRule.objects.exists()
    assert list(
        AuditEntry.objects.filter(action__contains="_rule")
        .order_by("pk")
        .values_list("action", flat=True)
    ) == ["alerts.add_rule", "alerts.update_rule", "alerts.delete_rule"]


def _delivery(rule: AlertRule, at, state: str, events: int = 1, **fields) -> Delivery:
    delivery = Delivery.objects.create(
        rule=rule,
        channel=rule.channel,
        group_key=f"g{at.timestamp()}",
        state=state,
        created_at=at,
        event_count=events,
        **fields,
    )
    for number in range(events):
        event = AlertEvent.objects.create(
            kind=JOB_FAILED,
            summary=f"job {number} of {delivery.group_key} failed",
            group_key=delivery.group_key,
            job_id=number + 1,
            created_at=at + timedelta(seconds=number),
        )
        delivery.events.add(event)
    return delivery


def test_the_delivery_history_pages_filters_and_folds_events(
    client, dashboard_users, django_assert_max_num_queries
):
    hook = webhook()
    other = webhook("other")
    rule = services.create_rule({"name": "jobs", "channel": "hook"})
    rule2 = services.create_rule({"name": "jobs2", "channel": "other"})
    now = timezone.now()
    for n in range(60):
        _delivery(rule if n % 2 else rule2, now - timedelta(minutes=n), "sent", events=1 + n % 3)
    failed = _delivery(rule, now + timedelta(seconds=5), "failed", events=3, attempts=2)
    failed.last_error = "webhook hooks.example.com answered HTTP 500: down"
    failed.save()
    for number in (1, 2):
        DeliveryAttempt.objects.create(
            delivery=failed,
            number=number,
            started_at=now,
            finished_at=now,
            ok=False,
            error=f"attempt {number}: HTTP 500",
        )
    logged_in_client(client, dashboard_users["viewer"])
    url = reverse("dashboard:alert_deliveries")
    with django_assert_max_num_queries(12):
        response = client.get(url)
    rows = response.context["page"].rows
    assert len(rows) == 50
    assert rows[0] == failed
    text = response.content.decode()
    assert 'hx-trigger="every 5s"' in text
    assert f"job 0 of {failed.group_key} failed" in text
    assert "and 2 more" in text
    assert "answered HTTP 500" in text
    older = client.get(url, {"cursor": response.context["page"].next_cursor})
    assert len(older.context["page"].rows) == 11
    assert "hx-trigger" not in older.content.decode()
    assert not set(older.context["page"].rows) & set(rows)

    only = client.get(url, {"state": "failed"}).context["page"].rows
    assert only == [failed]
    mine = client.get(url, {"channel": "other"}).context["page"].rows
    assert {d.channel_id for d in mine} == {other.pk}
    assert len(mine) == 30
    assert client.get(url, {"channel": "nosuch"}).status_code == 404
    fragment = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<div id="deliveries"')

    detail = client.get(reverse("dashboard:alert_delivery", args=[failed.pk])).content.decode()
    assert detail.count("attempt 1: HTTP 500") == 1
    assert "attempt 2: HTTP 500" in detail
    for number in range(3):
        assert f"job {number} of {failed.group_key} failed" in detail
    assert hook.name in detail
    assert SECRET not in detail
    assert WEBHOOK_PATH_TOKEN not in detail
