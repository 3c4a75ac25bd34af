"""The dashboard's projects pages: the projects, a project's versions and node-by-version matrix,
and the operator actions (upload, deploy where missing, rollback, delete).

In-process tests cover roles, validation and the audit trail; browser tests upload real eggs to
real Scrapyd nodes through a real ``crawlfleet web``.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from controlplane.accounts.models import AuditEntry
from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.lib.procutil import free_port
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task
from tests.fixtures.browser import confine
from tests.fixtures.common import zip_bytes
from tests.fixtures.dashboard import log_in, logged_in_client, screenshot

# A well-formed egg nothing runs: enough for the control plane, which never executes one.
GOOD_EGG = zip_bytes(
    {
        "EGG-INFO/PKG-INFO": "Metadata-Version: 1.0\nName: demo\nVersion: 7\n",
        "EGG-INFO/entry_points.txt": "[scrapy]\nsettings = demo.settings\n",
        "demo/__init__.py": "",
        "demo/settings.py": "BOT_NAME = 'demo'\n",
    }
)
NO_ENTRY_POINT = zip_bytes({"demo/__init__.py": "", "demo/settings.py": ""})


def egg_file(data: bytes, name: str = "demo.egg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def field_error(html: str, field: str) -> str:
    found = re.findall(rf'<div class="field-error" id="{field}-error">([^<]*)</div>', html)
    return " ".join(found)


def stored_project(name: str = "demo", versions: tuple[str, ...] = ("1", "2")) -> Project:
    project = Project.objects.create(name=name)
    for number in versions:
        data = GOOD_EGG + number.encode()
        Version.objects.create(
            project=project,
            version=number,
            egg=data,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            spiders=["books"],
        )
    project.current_version = project.versions.order_by("-number").first()
    project.save()
    return project


def version_url(name: str, project: Project, version: str) -> str:
    return reverse(f"dashboard:{name}", args=[project.pk, version])


# --- roles ---------------------------------------------------------------------------------------
def test_viewers_see_projects_but_no_forms_and_forged_posts_get_403(client, dashboard_users):
    project = stored_project()
    logged_in_client(client, dashboard_users["viewer"])
    listing = client.get(reverse("dashboard:projects")).content.decode()
    page = client.get(reverse("dashboard:project", args=[project.pk])).content.decode()
    assert 'data-project="demo"' in listing
    assert 'data-version="1"' in page
    for html in (listing, page):
        assert 'method="post" enctype="multipart/form-data"' not in html
        assert "Roll back" not in html
        assert "Deploy to nodes missing it" not in html
        assert "Delete" not in html
    forged = [
        (reverse("dashboard:project_create"), {"project": "x", "egg": egg_file(GOOD_EGG)}),
        (reverse("dashboard:project_upload", args=[project.pk]), {"egg": egg_file(GOOD_EGG)}),
        (version_url("version_deploy", project, "1"), {}),
        (version_url("version_current", project, "1"), {}),
        (version_url("version_delete", project, "1"), {}),
    ]
    for url, data in forged:
        assert client.post(url, data).status_code == 403, url
        assert client.get(url).status_code in (403, 405), url
    project.refresh_from_db()
    assert project.current_version.version == "2"
    assert sorted(project.versions.values_list("version", flat=True)) == ["1", "2"]
    assert not Project.objects.filter(name="x").exists()
    assert not AuditEntry.objects.exclude(action__startswith="login").exists()


# --- upload validation ---------------------------------------------------------------------------
def test_a_bad_upload_gives_a_message_beside_the_field_and_stores_nothing(client, dashboard_users):
    project = stored_project(versions=("1",))
    logged_in_client(client, dashboard_users["operator"])
    upload = reverse("dashboard:project_upload", args=[project.pk])
    cases = [
        ({"version": "9", "egg": egg_file(b"not a zip at all")}, "egg", "not a zip file"),
        ({"version": "9", "egg": egg_file(NO_ENTRY_POINT)}, "egg", "cannot find its settings"),
        ({"version": "1.0", "egg": egg_file(GOOD_EGG)}, "version", "must be digits only"),
        ({"version": "9"}, "egg", "This field is required"),
        ({"version": "1", "egg": egg_file(GOOD_EGG)}, "version", "different egg"),
    ]
    for data, field, message in cases:
        response = client.post(upload, data)
        assert response.status_code == 422, data
        assert message in field_error(response.content.decode(), field), data
    # A new project: its name is checked too, and nothing is created.
    response = client.post(
        reverse("dashboard:project_create"), {"project": "bad name", "egg": egg_file(GOOD_EGG)}
    )
    assert response.status_code == 422
    assert "is not a valid name" in field_error(response.content.decode(), "project")
    assert list(Project.objects.values_list("name", flat=True)) == ["demo"]
    assert list(Version.objects.values_list("version", flat=True)) == ["1"]
    assert not AuditEntry.objects.filter(action="deploy").exists()


def test_an_upload_without_nodes_is_stored_current_and_audited(client, dashboard_users):
    logged_in_client(client, dashboard_users["operator"])
    response = client.post(
        reverse("dashboard:project_create"),
        {"project": "demo", "version": "", "egg": egg_file(GOOD_EGG)},
        follow=True,
    )
    project = Project.objects.get(name="demo")
    assert response.redirect_chain[-1][0] == reverse("dashboard:project", args=[project.pk])
    html = response.content.decode()
    assert "demo 7: stored; no node is available yet" in html  # the egg's own version
    assert "No node was involved" in html  # the result panel
    assert project.current_version.version == "7"
    entry = AuditEntry.objects.get(action="deploy")
    assert (entry.actor, entry.target) == ("operator-user", "demo 7")


# --- rollback and deletion -----------------------------------------------------------------------
def test_rollback_and_deletion_follow_the_services_rules_and_are_audited(client, dashboard_users):
    project = stored_project(versions=("1", "2", "3"))
    Task.objects.create(
        name="pinned",
        project=project,
        spider="books",
        cron="0 0 1 1 *",
        version=project.versions.get(version="2"),
    )
    logged_in_client(client, dashboard_users["operator"])
    page = reverse("dashboard:project", args=[project.pk])

    html = client.post(version_url("version_delete", project, "3"), follow=True).content.decode()
    assert "demo 3 was not deleted: demo 3 is the current version of demo" in html
    html = client.post(version_url("version_delete", project, "2"), follow=True).content.decode()
    assert "demo 2 was not deleted:" in html
    assert "pinned" in html

    response = client.post(version_url("version_current", project, "1"), follow=True)
    assert response.redirect_chain[-1][0] == page
    assert "demo 1 is now current." in response.content.decode()
    project.refresh_from_db()
    assert project.current_version.version == "1"
    html = client.get(page).content.decode()
    assert re.search(r'data-version="1" data-current="yes"', html)

    response = client.post(version_url("version_delete", project, "3"), follow=True)
    assert "demo 3: deleted from 0 nodes." in response.content.decode()
    assert sorted(project.versions.values_list("version", flat=True)) == ["1", "2"]
    trail = list(
        AuditEntry.objects.exclude(action__startswith="login")
        .order_by("pk")
        .values_list("action", "actor", "target")
    )
    assert trail == [
        ("rollback", "operator-user", "demo 1"),
        ("version.delete", "operator-user", "demo 3"),
    ]


def test_the_matrix_marks_deployed_failed_removed_and_missing(client, dashboard_users):
    project = stored_project(versions=("1", "2"))
    old, current = project.versions.get(version="1"), project.versions.get(version="2")
    nodes = {
        name: Node.objects.create(name=name, url=f"http://127.0.0.1:{free_port()}", state=state)
        for name, state in [("a", "up"), ("b", "up"), ("c", "down")]
    }
    NodeDeployment.objects.create(node=nodes["a"], version=current, state="deployed")
    NodeDeployment.objects.create(node=nodes["a"], version=old, state="removed")
    NodeDeployment.objects.create(node=nodes["b"], version=current, state="failed", message="boom")
    NodeDeployment.objects.create(node=nodes["b"], version=old, state="deployed")
    logged_in_client(client, dashboard_users["viewer"])

    html = client.get(reverse("dashboard:project", args=[project.pk])).content.decode()

    def cells(node: str) -> list[str]:
        row = re.search(rf'<tr data-node="{node}".*?</tr>', html, re.S).group(0)
        return re.findall(r'data-deployment="(\w+)"', row)

    assert cells("a") == ["deployed", "removed"]  # columns newest first
    assert cells("b") == ["failed", "deployed"]
    assert cells("c") == ["missing", "absent"]  # only lacking the current one is a problem
    assert 'data-node="a" data-missing-current="no"' in html
    assert 'data-node="b" data-missing-current="yes"' in html
    assert "lacks the current version" in html
    assert '<span class="tile-value" data-missing>1</span>' in html  # b; c is down
    listing = client.get(reverse("dashboard:projects")).content.decode()
    assert 'data-consistent="no"' in listing
    assert "1 / 3 nodes hold it" in listing


# --- in a real browser ---------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.scrapyd
def test_upload_lands_on_every_node_deploy_where_missing_and_roll_back(
    cp_web, page, dashboard_users, scrapyd_nodes, failproject_egg
):
    nodes = scrapyd_nodes(3)
    for index, node in enumerate(nodes[:2], start=1):
        Node.objects.create(name=f"node-{index}", url=node.url, state=Node.State.UP)
    first, second = failproject_egg.version, str(int(failproject_egg.version) + 1)
    blocked = confine(page, cp_web)
    log_in(page, cp_web, dashboard_users["operator"])

    # The first version of a new project, from the projects page.
    page.goto(f"{cp_web}/projects/")
    screenshot(page, "projects-list-empty")
    page.fill("#id_project", failproject_egg.project)
    page.fill("#id_version", first)
    page.set_input_files("#id_egg", str(failproject_egg.path))
    page.get_by_role("button", name="Upload and deploy").click()
    page.locator(".messages", has_text="deployed to 2 of 2 nodes").wait_for(timeout=60_000)
    for name in ("node-1", "node-2"):
        assert page.locator(f'#result tr[data-result-node="{name}"][data-ok="yes"]').count() == 1
        row = page.locator(f'.deploy-matrix tr[data-node="{name}"]')
        assert row.locator('[data-deployment="deployed"]').count() == 1
    for node in nodes[:2]:
        assert node.get("listversions.json", project="failproject")["versions"] == [first]

    # A second version from the project's page: current everywhere.
    page.set_input_files("#id_egg", str(failproject_egg.path))
    page.fill("#id_version", second)
    page.get_by_role("button", name="Upload and deploy").click()
    page.locator(".messages", has_text=f"failproject {second}: deployed to 2 of 2").wait_for(
        timeout=60_000
    )
    assert page.locator("[data-current]").first.inner_text() == second
    screenshot(page, "projects-project-uploaded")

    # A node joins without the current version: the matrix shows it, one click fixes it.
    Node.objects.create(name="node-3", url=nodes[2].url, state=Node.State.UP)
    page.reload()
    page.locator('tr[data-node="node-3"][data-missing-current="yes"]').wait_for()
    screenshot(page, "projects-project-node-missing")
    page.locator(f'tr[data-version="{second}"]').get_by_role(
        "button", name="Deploy to nodes missing it"
    ).click()
    page.locator(".messages", has_text="deployed to 1 node(s) that missed it").wait_for(
        timeout=60_000
    )
    page.locator('tr[data-node="node-3"][data-missing-current="no"]').wait_for()
    assert nodes[2].get("listversions.json", project="failproject")["versions"] == [second]

    # Roll back: the older version becomes current (node-3 receives it first).
    page.locator(f'tr[data-version="{first}"]').get_by_role(
        "button", name="Roll back to this"
    ).click()
    page.locator(".messages", has_text=f"failproject {first} is now current").wait_for(
        timeout=60_000
    )
    page.locator(f'tr[data-version="{first}"][data-current="yes"]').wait_for()
    assert Project.objects.get(name="failproject").current_version.version == first
    assert sorted(nodes[2].get("listversions.json", project="failproject")["versions"]) == sorted(
        [first, second]
    )
    screenshot(page, "projects-project-rolled-back")
    page.goto(f"{cp_web}/projects/")
    page.locator('tr[data-project="failproject"] [data-consistent="yes"]').wait_for()
    screenshot(page, "projects-list")
    assert blocked == []
