"""The tag caps page: everyone reads the caps and their load; admins set and remove them."""

from __future__ import annotations

import pytest

from controlplane.accounts.models import AuditEntry
from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node, TagCap
from controlplane.scheduling.models import TaskRun
from tests.fixtures.dashboard import logged_in_client

URL = "/nodes/tag-caps/"


@pytest.fixture
def tagged_fleet(dashboard_users):
    eu = Node.objects.create(name="eu-1", url="http://127.0.0.1:1", tags=["eu"], capacity=4)
    Node.objects.create(name="eu-2", url="http://127.0.0.1:2", tags=["eu", "big"], capacity=4)
    Node.objects.create(name="us-1", url="http://127.0.0.1:3", tags=["us"], capacity=4)
    project = Project.objects.create(name="shop")
    version = Version.objects.create(
        project=project, version="1", egg=b"e", sha256="0" * 64, size=1
    )
    run = TaskRun.objects.create(trigger="api", scheduled_for="2026-12-01T00:00:00Z")
    for state in ("running", "pending", "succeeded"):
        Job.objects.create(
            run=run, project=project, spider="s", version=version, state=state, node=eu
        )
    TagCap.objects.create(tag="eu", max_concurrent=3)
    return dashboard_users


def test_everyone_reads_the_caps_with_their_load(client, tagged_fleet):
    logged_in_client(client, tagged_fleet["viewer"])
    page = client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-tag="eu"' in html
    row = html.split('data-tag="eu"')[1].split("</tr>")[0]
    # 2 nodes tagged eu, 2 jobs in flight on them (the ended one does not count), at most 3.
    assert [cell.split(">")[-1] for cell in row.split("</td>")[1:4]] == ["2", "2", "3"]
    assert "Set a cap" not in html  # a viewer gets no form
    for post in (f"{URL}set/", f"{URL}eu/delete/"):
        assert client.post(post, {"tag": "eu", "max_concurrent": 9}).status_code == 403
    assert TagCap.objects.get(tag="eu").max_concurrent == 3


def test_an_admin_sets_changes_and_removes_caps_audited(client, tagged_fleet):
    logged_in_client(client, tagged_fleet["admin"])
    assert "Set a cap" in client.get(URL).content.decode()
    done = client.post(f"{URL}set/", {"tag": "us", "max_concurrent": 2}, follow=True)
    assert "At most 2 job(s) at once on the nodes tagged us." in done.content.decode()
    client.post(f"{URL}set/", {"tag": "us", "max_concurrent": 5})
    assert TagCap.objects.get(tag="us").max_concurrent == 5
    client.post(f"{URL}us/delete/")
    assert not TagCap.objects.filter(tag="us").exists()
    assert list(
        AuditEntry.objects.filter(action__startswith="tagcap.")
        .order_by("pk")
        .values_list("action", flat=True)
    ) == ["tagcap.set", "tagcap.set", "tagcap.delete"]
    assert client.get(f"{URL}eu/delete/").status_code == 405  # POST only


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tag": "eu", "max_concurrent": -1}, "max_concurrent"),
        ({"tag": "eu", "max_concurrent": 0}, "max_concurrent"),
        ({"tag": "eu", "max_concurrent": "many"}, "max_concurrent"),
        ({"tag": "not a tag!", "max_concurrent": 2}, "tag"),
        ({"tag": "", "max_concurrent": 2}, "tag"),
    ],
)
def test_bad_caps_are_refused_beside_the_field_and_nothing_changes(
    client, tagged_fleet, data, field
):
    logged_in_client(client, tagged_fleet["admin"])
    page = client.post(f"{URL}set/", data)
    assert page.status_code == 422
    assert page.context["form"].errors[field]
    assert TagCap.objects.get(tag="eu").max_concurrent == 3
    assert TagCap.objects.count() == 1
    assert not AuditEntry.objects.filter(action__startswith="tagcap.").exists()
