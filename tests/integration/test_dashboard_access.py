"""Every dashboard page needs a login and a role; logins, good and bad, are audited."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from controlplane.accounts.models import AuditEntry
from controlplane.accounts.roles import role_of, set_role
from tests.fixtures.dashboard import PASSWORD, logged_in_client

PAGES = ["overview", "nodes", "projects", "tasks", "runs", "jobs", "alerts", "alert_deliveries"]
ADMIN_PAGES = ["audit", "users"]


@pytest.mark.parametrize("name", PAGES + ADMIN_PAGES)
def test_anonymous_users_are_sent_to_the_login_page(client, db, name):
    url = reverse(f"dashboard:{name}")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('dashboard:login')}?next={url}"


def test_each_role_sees_its_pages_and_no_more(client, dashboard_users):
    for role, login in dashboard_users.items():
        logged_in_client(client, login)
        for name in PAGES:
            assert client.get(reverse(f"dashboard:{name}")).status_code == 200, (role, name)
        for name in ADMIN_PAGES:
            expected = 200 if role == "admin" else 403
            assert client.get(reverse(f"dashboard:{name}")).status_code == expected, (role, name)
        client.logout()


def test_a_user_without_a_role_sees_nothing(client, db):
    get_user_model().objects.create_user("nobody", password=PASSWORD)
    client.login(username="nobody", password=PASSWORD)
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 403
    assert "no role" in response.content.decode()


def test_roles_come_from_one_group_and_superusers_are_admins(db):
    user = get_user_model().objects.create_user("someone", password=PASSWORD)
    assert role_of(user) is None
    set_role(user, "operator")
    assert role_of(user) == "operator"
    set_role(user, "viewer")
    assert role_of(user) == "viewer"
    assert sorted(user.groups.values_list("name", flat=True)) == ["viewer"]
    root = get_user_model().objects.create_superuser("root", password=PASSWORD)
    assert role_of(root) == "admin"
    with pytest.raises(ValueError, match="unknown role"):
        set_role(user, "owner")


def test_logins_and_failed_logins_are_audited_without_the_password(client, dashboard_users):
    login = dashboard_users["operator"]
    response = client.post(
        reverse("dashboard:login"), {"username": login.username, "password": "wrong-one"}
    )
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    response = client.post(
        reverse("dashboard:login"), {"username": login.username, "password": login.password}
    )
    assert response.status_code == 302
    entries = list(AuditEntry.objects.order_by("pk").values_list("action", "actor", "target"))
    assert entries == [
        ("login_failed", login.username, login.username),
        ("login", login.username, ""),
    ]
    assert "wrong-one" not in str(list(AuditEntry.objects.values()))


def test_logout_is_a_post(client, dashboard_users):
    logged_in_client(client, dashboard_users["viewer"])
    assert client.get(reverse("dashboard:logout")).status_code == 405
    assert client.post(reverse("dashboard:logout")).status_code == 302
    assert client.get(reverse("dashboard:overview")).status_code == 302


def test_pages_tell_the_browser_to_load_nothing_from_elsewhere(client, dashboard_users):
    logged_in_client(client, dashboard_users["viewer"])
    for url in (reverse("dashboard:overview"), reverse("dashboard:login"), "/admin/login/"):
        policy = client.get(url)["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
    assert "Content-Security-Policy" not in client.get("/api/v1/openapi.json")
