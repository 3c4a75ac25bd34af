"""The dashboard's nodes pages: the fleet list, a node's page, and the admin actions.

In-process tests (Django's test client) cover roles, validation and the audit trail; the browser
test (test_dashboard_nodes_browser.py) drives a real ``crawlfleet web`` and ``crawlfleet poller``
against real Scrapyd nodes.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts.models import AuditEntry
from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.jobs.models import Job
from controlplane.lib.procutil import free_port
from controlplane.nodes import health
from controlplane.nodes.models import HealthSample, Node
from tests.fixtures.dashboard import logged_in_client
from tests.fixtures.jobs import create_adhoc_run

SECRET = "n0de-pa55-never-in-html"


def make_node(name: str = "n1", **fields) -> Node:
    fields.setdefault("url", f"http://127.0.0.1:{free_port()}")
    fields.setdefault("state", Node.State.UP)
    return Node.objects.create(name=name, password=SECRET, username="crawl", **fields)


def node_pages(node: Node) -> list[str]:
    return [
        reverse("dashboard:nodes"),
        reverse("dashboard:node", args=[node.pk]),
        reverse("dashboard:node", args=[node.pk]) + "?span=7d",
        reverse("dashboard:node_edit", args=[node.pk]),
        reverse("dashboard:node_add"),
    ]


def field_error(html: str, field: str) -> str:
    """The message shown beside ``field`` (dashboard/_field.html), or ''."""
    found = re.search(rf'<div class="field-error" id="{field}-error">([^<]*)</div>', html)
    return found.group(1) if found else ""


def add_form(**overrides) -> dict:
    return {
        "name": "eu-1",
        "url": f"http://127.0.0.1:{free_port()}",
        "username": "",
        "password": "",
        "tags": "eu, big",
        "weight": "1",
        "capacity": "4",
        "enabled": "on",
        **overrides,
    }


# --- roles ---------------------------------------------------------------------------------------
def test_viewers_and_operators_see_the_fleet_but_no_buttons_and_forged_posts_get_403(
    client, dashboard_users
):
    node = make_node()
    for role in ("viewer", "operator"):
        logged_in_client(client, dashboard_users[role])
        listing = client.get(reverse("dashboard:nodes")).content.decode()
        page = client.get(reverse("dashboard:node", args=[node.pk])).content.decode()
        assert 'data-node="n1"' in listing
        for html in (listing, page):
            assert "Add node" not in html
            assert '<form method="post" action="/nodes/' not in html
            assert ">Drain<" not in html
            assert ">Delete" not in html
        assert client.get(reverse("dashboard:node_add")).status_code == 403
        assert client.get(reverse("dashboard:node_edit", args=[node.pk])).status_code == 403
        forged = [
            (reverse("dashboard:node_add"), add_form(name="forged")),
            (reverse("dashboard:node_edit", args=[node.pk]), add_form(weight="9")),
            (reverse("dashboard:node_toggle", args=[node.pk, "drain"]), {}),
            (reverse("dashboard:node_toggle", args=[node.pk, "disable"]), {}),
            (reverse("dashboard:node_delete", args=[node.pk]), {"force": "on"}),
        ]
        for url, data in forged:
            assert client.post(url, data).status_code == 403, (role, url)
        client.logout()
    node.refresh_from_db()
    assert (node.enabled, node.draining, node.weight) == (True, False, 1.0)
    assert Node.objects.count() == 1
    assert not AuditEntry.objects.filter(action__startswith="node.").exists()


def test_actions_are_posts_only(client, dashboard_users):
    node = make_node()
    logged_in_client(client, dashboard_users["admin"])
    for url in (
        reverse("dashboard:node_toggle", args=[node.pk, "drain"]),
        reverse("dashboard:node_delete", args=[node.pk]),
    ):
        assert client.get(url).status_code == 405
    assert (
        client.post(reverse("dashboard:node_toggle", args=[node.pk, "explode"])).status_code == 400
    )
    node.refresh_from_db()
    assert not node.draining


# --- validation ----------------------------------------------------------------------------------
BAD_NODES = [
    ({"weight": "-1"}, "weight", "greater than or equal to 0.01"),
    ({"capacity": "0"}, "capacity", "greater than or equal to 1"),
    ({"url": "ftp://somewhere"}, "url", "is not an http(s) URL"),
    ({"url": "http://user:pw@127.0.0.1:6800"}, "url", "not in the URL"),
    ({"name": "bad name!"}, "name", "is not a valid name"),
    ({"tags": "eu, no spaces allowed"}, "tags", "tags must be a list of names"),
    ({"name": "taken"}, "name", "already exists"),
    ({"url": "TAKEN"}, "url", "already registered"),
    ({}, "url", "no answer from a Scrapyd node"),  # nothing listens on that port
]


def test_a_bad_node_gives_a_message_beside_the_field_and_nothing_is_saved(client, dashboard_users):
    taken = make_node("taken")
    logged_in_client(client, dashboard_users["admin"])
    for overrides, field, message in BAD_NODES:
        if overrides.get("url") == "TAKEN":
            overrides = {"url": taken.url}
        response = client.post(reverse("dashboard:node_add"), add_form(**overrides))
        assert response.status_code == 422, overrides
        html = response.content.decode()
        assert message in field_error(html, field), (overrides, html)
    assert list(Node.objects.values_list("name", flat=True)) == ["taken"]
    assert not AuditEntry.objects.filter(action__startswith="node.").exists()


def test_an_edit_that_breaks_the_node_is_refused_and_changes_nothing(client, dashboard_users):
    node = make_node(weight=2.0)
    logged_in_client(client, dashboard_users["admin"])
    url = reverse("dashboard:node_edit", args=[node.pk])
    response = client.post(url, add_form(url=node.url, weight="-3"))
    assert response.status_code == 422
    assert "greater than or equal to 0.01" in field_error(response.content.decode(), "weight")
    # A new URL must answer before it is stored.
    response = client.post(url, add_form(url=f"http://127.0.0.1:{free_port()}", weight="3"))
    assert response.status_code == 422
    assert "no answer" in field_error(response.content.decode(), "url")
    fresh = Node.objects.get(pk=node.pk)
    assert (fresh.url, fresh.weight, fresh.password) == (node.url, 2.0, SECRET)
    assert not AuditEntry.objects.filter(action__startswith="node.").exists()


# --- changes against a real node -----------------------------------------------------------------
@pytest.mark.scrapyd
def test_add_edit_toggle_and_delete_a_real_node_audited_without_the_password(
    client, dashboard_users, shared_scrapyd_node
):
    logged_in_client(client, dashboard_users["admin"])
    data = add_form(url=shared_scrapyd_node.url + "/", username="crawl", password=SECRET)
    response = client.post(reverse("dashboard:node_add"), data, follow=True)
    assert response.status_code == 200, response.content
    node = Node.objects.get(name="eu-1")
    assert response.redirect_chain[-1][0] == reverse("dashboard:node", args=[node.pk])
    assert "Node eu-1 added: it answered as up." in response.content.decode()
    assert (node.url, node.password, node.tags, node.state) == (
        shared_scrapyd_node.url,
        SECRET,
        ["eu", "big"],
        Node.State.UP,
    )

    # An empty password keeps the stored one; the form never shows it.
    edit = reverse("dashboard:node_edit", args=[node.pk])
    form_html = client.get(edit).content.decode()
    assert 'name="password"' in form_html
    assert "a password is set" in form_html
    response = client.post(edit, {**data, "weight": "2.5", "password": ""})
    assert response.status_code == 302
    node.refresh_from_db()
    assert (node.weight, node.password) == (2.5, SECRET)

    for action, check in [
        ("drain", lambda n: n.draining),
        ("undrain", lambda n: not n.draining),
        ("disable", lambda n: not n.enabled),
        ("enable", lambda n: n.enabled),
    ]:
        response = client.post(reverse("dashboard:node_toggle", args=[node.pk, action]))
        assert response.status_code == 302
        node.refresh_from_db()
        assert check(node), action

    for url in node_pages(node):
        html = client.get(url).content.decode()
        assert SECRET not in html, url

    client.post(reverse("dashboard:node_delete", args=[node.pk]))
    assert not Node.objects.filter(pk=node.pk).exists()
    trail = list(AuditEntry.objects.order_by("pk").values_list("action", "actor", "target"))
    assert [a for a in trail if a[0].startswith("node.")] == [
        ("node.add", "admin-user", "eu-1"),
        ("node.update", "admin-user", "eu-1"),
        ("node.drain", "admin-user", "eu-1"),
        ("node.undrain", "admin-user", "eu-1"),
        ("node.disable", "admin-user", "eu-1"),
        ("node.enable", "admin-user", "eu-1"),
        ("node.delete", "admin-user", "eu-1"),
    ]
    assert AuditEntry.objects.get(action="node.update").detail["changes"]["weight"] == [1.0, 2.5]
    assert SECRET not in str(list(AuditEntry.objects.values()))


def test_a_node_with_jobs_on_it_is_not_deleted_unless_forced(client, dashboard_users):
    node = make_node()
    project = Project.objects.create(name="proj")
    version = Version.objects.create(
        project=project, version="1", egg=b"e", sha256="0" * 64, size=1
    )
    job = create_adhoc_run(project, "books", version=version)
    Job.objects.filter(pk=job.pk).update(node=node, state=Job.State.RUNNING)
    logged_in_client(client, dashboard_users["admin"])

    response = client.post(reverse("dashboard:node_delete", args=[node.pk]), follow=True)
    html = response.content.decode()
    assert "n1 was not deleted: 1 job(s) are on node n1; drain it and let them finish" in html
    assert Node.objects.filter(pk=node.pk).exists()
    assert not AuditEntry.objects.filter(action="node.delete").exists()

    response = client.post(reverse("dashboard:node_delete", args=[node.pk]), {"force": "on"})
    assert response.status_code == 302
    assert not Node.objects.filter(pk=node.pk).exists()
    assert AuditEntry.objects.get(action="node.delete").detail["forced"] is True
    assert Job.objects.get(pk=job.pk).node_id is None  # the poller marks it lost and retries


# --- what the pages show -------------------------------------------------------------------------
def test_the_list_shows_state_load_versions_and_refreshes_as_a_fragment(client, dashboard_users):
    up = make_node("a-up", capacity=4, tags=["eu"], last_latency=0.012)
    make_node("b-draining", draining=True)
    make_node("c-off", enabled=False, state=Node.State.DOWN)
    project = Project.objects.create(name="proj")
    old = Version.objects.create(project=project, version="1", egg=b"e", sha256="0" * 64, size=1)
    new = Version.objects.create(project=project, version="2", egg=b"e", sha256="1" * 64, size=1)
    project.current_version = new
    project.save()
    NodeDeployment.objects.create(node=up, version=old, state=NodeDeployment.State.DEPLOYED)
    for state in (Job.State.RUNNING, Job.State.PENDING, Job.State.DISPATCHING):
        job = create_adhoc_run(project, "books", version=old)
        Job.objects.filter(pk=job.pk).update(node=up, state=state)
    logged_in_client(client, dashboard_users["viewer"])

    html = client.get(reverse("dashboard:nodes")).content.decode()
    row = re.search(r'<tr data-node="a-up".*?</tr>', html, re.S).group(0)
    assert 'data-state="up"' in row
    assert "3 / 4" in row
    assert "1 running, 2 pending" in row
    assert "<code>eu</code>" in row
    assert "12 ms" in row
    assert 'data-versions="1"' in row
    assert "proj 1" in row
    assert 'data-deployment="missing"' in row
    assert "proj 2" in row
    assert 'data-node="b-draining" data-state="draining"' in html
    assert 'data-node="c-off" data-state="disabled"' in html
    assert 'hx-trigger="every 3s"' in html

    fragment = client.get(reverse("dashboard:nodes"), HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<div id="fleet"')
    assert "<html" not in fragment
    filtered = client.get(reverse("dashboard:nodes") + "?state=draining").content.decode()
    assert "b-draining" in filtered
    assert "a-up" not in filtered
    assert "a-up" in client.get(reverse("dashboard:nodes") + "?tag=eu").content.decode()
    assert "a-up" not in client.get(reverse("dashboard:nodes") + "?tag=e").content.decode()


def test_the_node_page_shows_health_history_changes_and_recent_jobs(client, dashboard_users):
    node = make_node()
    now = timezone.now()
    for minutes, ok, state in [(50, True, "up"), (40, False, "degraded"), (30, True, "up")]:
        HealthSample.objects.create(
            node=node,
            at=now - timedelta(minutes=minutes),
            state=state,
            previous_state="up" if state == "degraded" else "degraded",
            changed=True,
            ok=ok,
            latency=0.02 if ok else 2.0,
            error="" if ok else "timed out",
        )
    project = Project.objects.create(name="proj")
    version = Version.objects.create(
        project=project, version="1", egg=b"e", sha256="0" * 64, size=1
    )
    job = create_adhoc_run(project, "books", version=version)
    Job.objects.filter(pk=job.pk).update(node=node, state=Job.State.SUCCEEDED)
    logged_in_client(client, dashboard_users["viewer"])

    html = client.get(reverse("dashboard:node", args=[node.pk])).content.decode()
    assert "data-chart=" in html
    assert "latency (ms)" in html
    assert html.count("data-change=") == 3
    assert "timed out" in html
    assert "66.7%" in html  # two of three sampled checks answered
    assert f'data-job="{job.pk}"' in html
    assert f'href="{reverse("dashboard:jobs")}?node=n1"' in html
    live = client.get(reverse("dashboard:node", args=[node.pk]) + "?part=live", HTTP_HX_REQUEST="1")
    assert live.content.decode().startswith('<div id="node-live"')


# --- health history ------------------------------------------------------------------------------
def test_health_samples_are_one_a_minute_plus_every_change_and_pruned(db, monkeypatch):
    node = make_node(state=Node.State.UNKNOWN)

    def check(ok: bool) -> health.HealthCheck:
        old, new = node.record_check(ok=ok, latency=0.01 if ok else None, error="" if ok else "x")
        result = health.HealthCheck(ok, old, new, 0.01)
        health.sample(node, result)
        return result

    check(True)  # unknown -> up: a change
    check(True)
    check(True)
    assert list(HealthSample.objects.values_list("state", "changed")) == [("up", True)]
    check(False)  # up -> degraded: a change, written at once
    check(False)
    assert HealthSample.objects.count() == 2
    # Another poller's claim for the same minute and state loses.
    assert not health.claim_sample(node, Node.State.DEGRADED, timezone.now())
    # A minute later the next check is sampled again.
    Node.objects.filter(pk=node.pk).update(health_sampled_at=timezone.now() - timedelta(seconds=61))
    node.refresh_from_db()  # the next poll cycle reads its nodes afresh
    check(False)
    assert HealthSample.objects.count() == 3
    # Samples older than a week go when the next one is written.
    HealthSample.objects.filter(pk=HealthSample.objects.order_by("at").first().pk).update(
        at=timezone.now() - timedelta(days=8)
    )
    check(True)
    assert HealthSample.objects.count() == 3
    assert not HealthSample.objects.filter(at__lt=timezone.now() - timedelta(days=7)).exists()
