"""Users and API tokens: admin only, every change audited, the fleet never without an admin, and
a token's secret shown once, in the response that created it, and nowhere else ever."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.accounts import audit, users
from controlplane.accounts.models import ApiToken, AuditEntry
from controlplane.accounts.roles import role_of, set_role
from controlplane.refusals import Refused
from tests.fixtures.dashboard import PASSWORD, logged_in_client

User = get_user_model()
NEW_PASSWORD = "a-much-longer-passphrase-7"


def user(name: str):
    return User.objects.get(username=name)


def audit_rows() -> list[tuple[str, str, str]]:
    return list(
        AuditEntry.objects.exclude(action__in=["login", "logout", "login_failed"])
        .order_by("pk")
        .values_list("actor", "action", "target")
    )


@pytest.fixture(autouse=True)
def quick_hashing(settings) -> None:
    """Passwords are hashed many times here; the default hasher's cost is for production."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin(client, dashboard_users) -> Client:
    return logged_in_client(client, dashboard_users["admin"])


# --- who may ------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_manage_accounts_and_forged_posts_are_refused(client, dashboard_users, role):
    logged_in_client(client, dashboard_users[role])
    target = user(dashboard_users["viewer"].username)
    token = ApiToken.create("ci", "operator")[0]
    for name, kwargs in [
        ("users", {}),
        ("user-new", {}),
        ("user", {"user_id": target.pk}),
        ("tokens", {}),
    ]:
        assert client.get(reverse(f"dashboard:{name}", kwargs=kwargs)).status_code == 403, name
    posts = [
        (
            "user-new",
            {},
            {"username": "x", "role": "admin", "password": NEW_PASSWORD, "password2": NEW_PASSWORD},
        ),
        ("user-role", {"user_id": target.pk}, {"role": "admin"}),
        (
            "user-password",
            {"user_id": target.pk},
            {"password": NEW_PASSWORD, "password2": NEW_PASSWORD},
        ),
        ("user-active", {"user_id": target.pk}, {"active": "0"}),
        ("tokens", {}, {"name": "sneaky", "role": "admin"}),
        ("token-revoke", {"token_id": token.pk}, {}),
    ]
    for name, kwargs, data in posts:
        assert client.post(reverse(f"dashboard:{name}", kwargs=kwargs), data).status_code == 403, (
            name
        )
    assert not User.objects.filter(username="x").exists()
    assert role_of(user(dashboard_users["viewer"].username)) == "viewer"
    assert not ApiToken.objects.get(pk=token.pk).revoked
    assert audit_rows() == []


def test_state_changes_are_post_only(admin, dashboard_users):
    target = user(dashboard_users["viewer"].username)
    for name in ("user-role", "user-password", "user-active"):
        assert (
            admin.get(reverse(f"dashboard:{name}", kwargs={"user_id": target.pk})).status_code
            == 405
        )


# --- users ---------------------------------------------------------------------------------------
def test_the_list_shows_role_status_and_last_login(admin, dashboard_users):
    users.deactivate(user(dashboard_users["viewer"].username))
    html = admin.get(reverse("dashboard:users")).content.decode()
    assert html.count('class="badge state-role-admin"') == 1
    assert "operator-user" in html
    assert "deactivated" in html
    assert "(you)" in html


def test_creating_a_user_sets_the_role_and_audits_without_the_password(admin, dashboard_users):
    data = {
        "username": "night-shift",
        "role": "operator",
        "password": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
    }
    response = admin.post(reverse("dashboard:user-new"), data)
    created = user("night-shift")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:user", kwargs={"user_id": created.pk})
    assert role_of(created) == "operator"
    assert audit_rows() == [("admin-user", "user.create", "night-shift")]
    assert AuditEntry.objects.get(action="user.create").detail == {"role": "operator"}
    assert NEW_PASSWORD not in str(list(AuditEntry.objects.values()))
    assert Client().login(username="night-shift", password=NEW_PASSWORD)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"password": "short", "password2": "short"}, "password", "too short"),
        ({"password2": NEW_PASSWORD + "x"}, "password2", "the two passwords differ"),
        ({"username": "operator-user"}, "username", "an account with this name exists"),
        ({"username": "OPERATOR-USER"}, "username", "an account with this name exists"),
        ({"username": "no spaces!"}, "username", "Enter a valid username"),
        ({"username": ""}, "username", "This field is required"),
        ({"role": "owner"}, "role", "Select a valid choice"),
    ],
)
def test_a_bad_new_user_is_explained_beside_the_field_and_nothing_is_saved(
    admin, data, field, message
):
    before = User.objects.count()
    form = {
        "username": "new-person",
        "role": "viewer",
        "password": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
    }
    response = admin.post(reverse("dashboard:user-new"), {**form, **data})
    assert response.status_code in (409, 422)
    html = response.content.decode()
    error_at = html.index(f'id="{field}-error"')
    assert message in html[error_at : error_at + 200]
    assert User.objects.count() == before
    assert audit_rows() == []


def test_role_changes_are_audited_old_to_new(admin, dashboard_users):
    operator = user(dashboard_users["operator"].username)
    response = admin.post(
        reverse("dashboard:user-role", kwargs={"user_id": operator.pk}), {"role": "admin"}
    )
    assert response.status_code == 302
    assert role_of(user(operator.username)) == "admin"
    entry = AuditEntry.objects.get(action="user.role")
    assert (entry.actor, entry.target, entry.detail) == (
        "admin-user",
        operator.username,
        {"changes": {"role": ["operator", "admin"]}},
    )


def test_an_admin_cannot_demote_or_deactivate_themselves(admin, dashboard_users):
    me = user(dashboard_users["admin"].username)
    response = admin.post(
        reverse("dashboard:user-role", kwargs={"user_id": me.pk}), {"role": "viewer"}
    )
    assert response.status_code == 403
    html = response.content.decode()
    assert "you cannot demote yourself" in html[html.index('id="role-error"') :][:200]
    response = admin.post(
        reverse("dashboard:user-active", kwargs={"user_id": me.pk}), {"active": "0"}
    )
    assert response.status_code == 403
    assert "you cannot deactivate your own account" in response.content.decode()
    me.refresh_from_db()
    assert me.is_active
    assert role_of(me) == "admin"
    assert audit_rows() == []


def test_the_last_admin_cannot_be_removed_by_anyone(dashboard_users):
    only = user(dashboard_users["admin"].username)
    ci = audit.Actor("token", "ci", "admin")
    with pytest.raises(Refused, match="last active admin"):
        users.set_user_role(only, "operator", actor=ci)
    with pytest.raises(Refused, match="last active admin"):
        users.deactivate(only, actor=ci)
    assert role_of(user(only.username)) == "admin"
    # With a second admin (a superuser counts), either may go, but not both.
    root = User.objects.create_superuser("root", password=PASSWORD)
    users.set_user_role(root, "operator", actor=ci)
    root.refresh_from_db()
    assert (root.is_superuser, role_of(root)) == (False, "operator")
    with pytest.raises(Refused):
        users.deactivate(only, actor=ci)
    set_role(root, "admin")
    users.deactivate(only, actor=ci)
    assert not user(only.username).is_active
    with pytest.raises(Refused, match="last active admin"):
        users.set_user_role(root, "viewer", actor=ci)


def test_deactivating_ends_the_users_sessions_and_reactivating_lets_them_back(
    admin, dashboard_users
):
    login = dashboard_users["operator"]
    theirs = logged_in_client(Client(), login)
    assert theirs.get(reverse("dashboard:overview")).status_code == 200
    target = user(login.username)
    url = reverse("dashboard:user-active", kwargs={"user_id": target.pk})
    assert admin.post(url, {"active": "0"}).status_code == 302
    assert theirs.get(reverse("dashboard:overview")).status_code == 302  # to the login page
    assert not Client().login(username=login.username, password=login.password)
    assert admin.post(url, {"active": "1"}).status_code == 302
    assert Client().login(username=login.username, password=login.password)
    assert [a for _, a, _ in audit_rows()] == ["user.deactivate", "user.reactivate"]
    assert admin.post(url, {"active": "maybe"}).status_code == 400


def test_two_admins_deactivating_at_once_record_it_once(dashboard_users):
    name = dashboard_users["viewer"].username
    first, second = user(name), user(name)  # what two requests read at the same moment
    ci = audit.Actor("token", "ci", "admin")
    users.deactivate(first, actor=ci)
    users.deactivate(second, actor=ci)
    assert [a for _, a, _ in audit_rows()] == ["user.deactivate"]
    users.reactivate(first, actor=ci)
    users.reactivate(second, actor=ci)  # still thinks the account is inactive
    assert [a for _, a, _ in audit_rows()] == ["user.deactivate", "user.reactivate"]


def test_setting_a_password_validates_it_and_keeps_it_out_of_the_trail(admin, dashboard_users):
    login = dashboard_users["viewer"]
    target = user(login.username)
    url = reverse("dashboard:user-password", kwargs={"user_id": target.pk})
    short = admin.post(url, {"password": "abc", "password2": "abc"})
    assert short.status_code == 422
    html = short.content.decode()
    assert "too short" in html[html.index('id="password-error"') :][:200]
    assert Client().login(username=login.username, password=login.password)  # unchanged

    assert admin.post(url, {"password": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code == 302
    assert not Client().login(username=login.username, password=login.password)
    assert Client().login(username=login.username, password=NEW_PASSWORD)
    assert audit_rows() == [("admin-user", "user.password", login.username)]
    assert NEW_PASSWORD not in str(list(AuditEntry.objects.values()))


def test_an_admin_setting_their_own_password_stays_logged_in(admin, dashboard_users):
    me = user(dashboard_users["admin"].username)
    url = reverse("dashboard:user-password", kwargs={"user_id": me.pk})
    assert admin.post(url, {"password": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code == 302
    assert admin.get(reverse("dashboard:users")).status_code == 200


# --- tokens --------------------------------------------------------------------------------------
def test_a_token_secret_is_shown_once_and_never_again(admin, dashboard_users):
    response = admin.post(reverse("dashboard:tokens"), {"name": "ci-deploy", "role": "operator"})
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    secret = response.context["secret"]
    assert secret.startswith("cf_")
    html = response.content.decode()
    assert html.count(secret) == 1
    assert 'id="token-secret"' in html
    token = ApiToken.objects.get(name="ci-deploy")
    assert Client().get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200

    # Nowhere else: no redirect, no cookie or session, no later page, no audit entry.
    assert "Location" not in response
    assert all(secret not in morsel.value for morsel in admin.cookies.values())
    assert secret not in str(dict(admin.session.items()))
    assert secret not in str(list(AuditEntry.objects.values()))
    assert AuditEntry.objects.get(action="token.create").detail == {
        "role": "operator",
        "prefix": token.prefix,
    }
    for name in ("tokens", "users", "audit", "overview"):
        later = admin.get(reverse(f"dashboard:{name}"))
        assert later.status_code == 200
        assert secret not in later.content.decode(), name
        assert secret[len(token.prefix) :] not in later.content.decode(), name
    assert token.prefix in admin.get(reverse("dashboard:tokens")).content.decode()


def test_bad_token_names_are_explained_and_nothing_is_saved(admin):
    ApiToken.create("taken", "viewer")
    for name, status, message in [
        ("has space", 422, "letters, digits"),
        ("taken", 409, "taken"),
        ("", 422, "required"),
    ]:
        response = admin.post(reverse("dashboard:tokens"), {"name": name, "role": "viewer"})
        assert response.status_code == status, name
        html = response.content.decode()
        assert message in html[html.index('id="name-error"') :][:200]
        assert "token-secret" not in html
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["taken"]
    assert audit_rows() == []


def test_revoking_a_token_stops_it_and_is_audited(admin):
    token, secret = ApiToken.create("old-ci", "operator")
    response = admin.post(reverse("dashboard:token-revoke", kwargs={"token_id": token.pk}))
    assert response.status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked
    assert Client().get("/api/v1/jobs", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401
    assert audit_rows() == [("admin-user", "token.revoke", "old-ci")]
    page = admin.get(reverse("dashboard:tokens")).content.decode()
    assert "revoked" in page
    assert reverse("dashboard:token-revoke", kwargs={"token_id": token.pk}) not in page
