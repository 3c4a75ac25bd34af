"""The audit trail: one filtered, keyset-paged query behind the dashboard page and the REST API."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts import audit, auditlog
from controlplane.accounts.models import ApiToken, AuditEntry
from controlplane.refusals import Refused
from tests.fixtures.dashboard import logged_in_client

API = "/api/v1/audit"


def entry(actor: str, action: str, target: str = "", ago: timedelta = timedelta(0), **detail):
    row = audit.record(audit.Actor("user", actor, "admin", ip="10.0.0.7"), action, target, **detail)
    AuditEntry.objects.filter(pk=row.pk).update(at=timezone.now() - ago)
    row.refresh_from_db()
    return row


@pytest.fixture(autouse=True)
def quick_hashing(settings) -> None:
    """The default hasher's cost is for production; these tests log in often."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def trail(db) -> dict[str, AuditEntry]:
    hour = timedelta(hours=1)
    return {
        "edit": entry(
            "alice",
            "task.update",
            "nightly-books",
            ago=1 * hour,
            changes={"cron": ["0 2 * * *", "30 3 * * *"], "enabled": [True, False]},
        ),
        "create": entry(
            "alice", "task.create", "hourly-news", ago=5 * hour, fields={"cron": "0 * * * *"}
        ),
        "cancel": entry("bob", "job.cancel", "job 17", ago=26 * hour, spider="books"),
        "token": entry("carol", "token.create", "ci-deploy", ago=3 * hour, role="operator"),
        "login": entry("bob", "login", ago=timedelta(minutes=5)),
    }


def names(rows) -> list[str]:
    return [f"{row.action} {row.target}".strip() for row in rows]


def test_filters_by_actor_action_target_and_time(trail):
    search = lambda **f: names(auditlog.search(auditlog.AuditFilter(**f)).rows)  # noqa: E731
    assert search() == [
        "login",
        "task.update nightly-books",
        "token.create ci-deploy",
        "task.create hourly-news",
        "job.cancel job 17",
    ]
    assert search(actor="ALI") == ["task.update nightly-books", "task.create hourly-news"]
    assert search(action="task") == ["task.update nightly-books", "task.create hourly-news"]
    assert search(action="task.create") == ["task.create hourly-news"]
    assert search(action="tas") == []  # an area is a whole word, not a prefix of one
    assert search(target="books") == ["task.update nightly-books"]
    now = timezone.now()
    assert search(since=now - timedelta(hours=4)) == [
        "login",
        "task.update nightly-books",
        "token.create ci-deploy",
    ]
    assert search(since=now - timedelta(hours=24), until=now - timedelta(hours=2)) == [
        "token.create ci-deploy",
        "task.create hourly-news",
    ]
    assert search(actor="bob", since=now - timedelta(hours=48)) == ["login", "job.cancel job 17"]
    with pytest.raises(Refused) as refused:
        search(since=now, until=now - timedelta(hours=1))
    assert "until" in refused.value.fields


def test_pages_follow_the_cursor_through_equal_times_without_gaps_or_repeats(db):
    at = timezone.now()
    for index in range(123):
        entry("robot", "job.retry", f"job {index}")
    AuditEntry.objects.update(at=at)  # every entry at the same instant: the id breaks the ties
    seen, cursor, pages = [], None, 0
    while True:
        page = auditlog.search(auditlog.AuditFilter(), cursor, size=50)
        seen += [row.pk for row in page.rows]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(AuditEntry.objects.values_list("pk", flat=True), reverse=True)
    with pytest.raises(Refused):
        auditlog.search(auditlog.AuditFilter(), "not-a-cursor")


# --- the dashboard page --------------------------------------------------------------------------
def test_the_page_shows_who_what_when_where_and_the_change(client, dashboard_users, trail):
    logged_in_client(client, dashboard_users["admin"])
    response = client.get(reverse("dashboard:audit"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "nightly-books" in html
    assert "10.0.0.7" in html
    # A task change reads field: old → new.
    assert (
        '<span class="audit-key">cron</span>: <del class="mono">0 2 * * *</del> → <ins class="mono">30 3 * * *</ins>'
        in html
    )
    assert '<del class="mono">yes</del> → <ins class="mono">no</ins>' in html
    assert "?action=task.update" in html  # each action links to its filter

    filtered = client.get(reverse("dashboard:audit"), {"actor": "carol"}).content.decode()
    assert "ci-deploy" in filtered
    assert "nightly-books" not in filtered
    nothing = client.get(reverse("dashboard:audit"), {"target": "no-such-thing"})
    assert "No entries match these filters." in nothing.content.decode()


def test_bad_filters_are_shown_beside_their_field(client, dashboard_users, trail):
    logged_in_client(client, dashboard_users["admin"])
    response = client.get(reverse("dashboard:audit"), {"since": "yesterday-ish"})
    assert response.status_code == 400
    assert 'id="since-error"' in response.content.decode()
    backwards = client.get(
        reverse("dashboard:audit"), {"since": "2030-01-02T00:00", "until": "2030-01-01T00:00"}
    )
    assert backwards.status_code == 400
    assert 'id="until-error">must be later than since' in backwards.content.decode()


def test_the_page_pages_by_cursor_keeping_the_filters(client, dashboard_users, db):
    for index in range(60):
        entry("robot", "job.retry", f"job {index}", ago=timedelta(seconds=index))
    entry("human", "login")
    logged_in_client(client, dashboard_users["admin"])
    first = client.get(reverse("dashboard:audit"), {"actor": "robot"})
    page = first.context["page"]
    assert len(page.rows) == 50
    assert page.next_cursor
    older = urlencode({"actor": "robot", "cursor": page.next_cursor}).replace("&", "&amp;")
    assert f'href="?{older}" rel="next"' in first.content.decode()
    second = client.get(reverse("dashboard:audit"), {"actor": "robot", "cursor": page.next_cursor})
    assert names(second.context["page"].rows) == [f"job.retry job {i}" for i in range(50, 60)]
    assert second.context["page"].next_cursor is None


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_see_the_trail(client, dashboard_users, trail, role):
    logged_in_client(client, dashboard_users[role])
    assert client.get(reverse("dashboard:audit")).status_code == 403


# --- the REST API --------------------------------------------------------------------------------
def bearer(role: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.create(f'audit-{role}', role)[1]}"}


def test_the_api_answers_admins_only(client, trail, dashboard_users):
    assert client.get(API).status_code == 401
    for role in ("viewer", "operator", "node"):
        response = client.get(API, **bearer(role))
        assert response.status_code == 403, role
        assert response.json()["error"]["code"] == "forbidden"
    assert client.get(API, **bearer("admin")).status_code == 200
    logged_in_client(client, dashboard_users["operator"])
    assert client.get(API).status_code == 403
    logged_in_client(client, dashboard_users["admin"])
    assert client.get(API).status_code == 200


def test_the_api_filters_and_pages_like_the_page(trail):
    api = Client(**bearer("admin"))
    body = api.get(API, {"actor": "alice", "action": "task"}).json()
    assert [item["target"] for item in body["items"]] == ["nightly-books", "hourly-news"]
    assert body["next_cursor"] is None
    edit = body["items"][0]
    assert edit["detail"] == {
        "changes": {"cron": ["0 2 * * *", "30 3 * * *"], "enabled": [True, False]}
    }
    assert set(edit) == {"id", "at", "actor_kind", "actor", "action", "target", "detail", "ip"}
    assert edit["ip"] == "10.0.0.7"

    collected, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get(API, params).json()
        collected += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Everything, newest first, once each.
    assert collected == list(AuditEntry.objects.order_by("-at", "-pk").values_list("pk", flat=True))

    since = (timezone.now() - timedelta(hours=4)).isoformat()
    recent = api.get(API, {"since": since}).json()["items"]
    assert [item["action"] for item in recent] == ["login", "task.update", "token.create"]
    bad = api.get(API, {"cursor": "garbage"})
    assert bad.status_code == 400
    assert "cursor" in bad.json()["error"]["fields"]
    assert api.get(API, {"limit": 0}).status_code == 422
    assert api.get(API, {"since": "not a time"}).status_code == 422


def test_the_api_is_in_the_openapi_schema(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    operation = schema["paths"]["/api/v1/audit"]["get"]
    assert operation["summary"] == "Audit trail, newest first"
    params = {p["name"] for p in operation["parameters"]}
    assert params == {"actor", "action", "target", "since", "until", "cursor", "limit"}
    assert operation["security"] == [{"ApiAuth": []}]
