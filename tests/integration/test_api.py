"""The REST API: auth and roles, the error envelope, nodes, projects and versions, the wire.

Most tests use Django's test client in-process; the ones about the wire (a real ``crawlfleet
web``, node self-registration, egg uploads over HTTP) run against real processes. Tasks, jobs
and reports are in test_api_tasks_jobs.py.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from django.test import Client

from controlplane.accounts.models import ApiToken
from controlplane.deploys.models import NodeDeployment, Project
from controlplane.jobs.models import Job
from controlplane.lib.procutil import free_port
from controlplane.nodes.models import Node
from controlplane.scheduling.models import TaskRun
from tests.fixtures.api import Api, assert_error, token
from tests.fixtures.common import VENV_BIN
from tests.fixtures.jobs import create_adhoc_run

SECRET_PASSWORD = "n0de-Pa55word-never-shown"


# --- auth, roles, envelope ------------------------------------------------------------------
@pytest.mark.django_db
def test_authentication_and_roles(project):
    anonymous = Api(None)
    error = assert_error(anonymous.get("/nodes"), 401, "unauthenticated")
    assert "Bearer" in error["message"]
    assert_error(Api("cf_not-a-real-token").get("/nodes"), 401)
    malformed = Api(None)
    malformed.headers = {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}
    assert_error(malformed.get("/nodes"), 401)

    viewer = Api(token("viewer"))
    assert viewer.get("/nodes").status_code == 200
    assert viewer.get("/projects").status_code == 200
    assert viewer.get("/jobs").status_code == 200
    job = create_adhoc_run(project, "books")
    denied = assert_error(viewer.post(f"/jobs/{job.pk}/cancel"), 403, "forbidden")
    assert "operator" in denied["message"]

    operator = Api(token("operator"))
    assert operator.post(f"/jobs/{job.pk}/cancel").status_code == 200
    assert_error(operator.post("/nodes", {"name": "n", "url": "http://127.0.0.1:1"}), 403)
    assert_error(operator.get("/tokens"), 403)
    assert_error(operator.post("/nodes/register", {"name": "n", "url": "http://x:1"}), 403)

    node_token = Api(token("node"))
    assert_error(node_token.get("/nodes"), 403)
    assert_error(node_token.get("/jobs"), 403)

    revoked_secret = token("operator", "soon-revoked")
    ApiToken.objects.filter(name="soon-revoked").update(revoked=True)
    assert_error(Api(revoked_secret).get("/jobs"), 401)


@pytest.mark.django_db
def test_staff_session_auth_with_roles_and_csrf(project, django_user_model):
    from django.contrib.auth.models import Group

    staff = django_user_model.objects.create_user("ops", password="pw-123456789", is_staff=True)
    plain = django_user_model.objects.create_user("someone", password="pw-123456789")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(plain)
    assert_error(browser.get("/api/v1/jobs"), 403)

    browser.force_login(staff)
    assert browser.get("/api/v1/jobs").status_code == 200
    job = create_adhoc_run(project, "books")
    assert_error(browser.post(f"/api/v1/jobs/{job.pk}/cancel"), 403)  # viewer by default
    staff.groups.add(Group.objects.create(name="operator"))
    # An operator, but a state change from a session needs the CSRF token.
    assert_error(browser.post(f"/api/v1/jobs/{job.pk}/cancel"), 403)
    csrf = "k" * 32  # what a page of the dashboard would have put in the cookie
    browser.cookies["csrftoken"] = csrf
    response = browser.post(f"/api/v1/jobs/{job.pk}/cancel", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_error_envelope_for_unknown_paths_bad_json_and_missing_objects(admin):
    assert_error(admin.get("/no/such/thing"), 404, "not_found")
    assert_error(admin.get("/jobs/999999"), 404, "not_found")
    assert_error(admin.get("/projects/nope"), 404)
    response = admin.client.post(
        "/api/v1/tasks", data="{not json", content_type="application/json", **admin.headers
    )
    assert_error(response, 400, "bad_request")
    error = assert_error(admin.get("/jobs?limit=many"), 422, "invalid")
    assert "limit" in error["fields"]
    # A write to an unknown path (a trailing slash too many) from a client with no CSRF cookie,
    # as any API client is, gets the envelope, not Django's HTML CSRF failure page.
    strict = Client(enforce_csrf_checks=True)
    assert_error(strict.post("/api/v1/tasks/", data="{}", content_type="application/json"), 404)


def test_openapi_schema_is_served(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/report/{scrapyd_job_id}" in schema["paths"]
    assert "/api/v1/projects/{name}/versions" in schema["paths"]
    node_out = schema["components"]["schemas"]["NodeOut"]["properties"]
    assert "password" not in node_out
    assert "username" not in node_out


# --- nodes ----------------------------------------------------------------------------------
@pytest.mark.scrapyd
@pytest.mark.django_db
def test_nodes_never_show_credentials_and_must_answer(admin, viewer, shared_scrapyd_node):
    port = free_port()
    silent = admin.post("/nodes", {"name": "ghost", "url": f"http://127.0.0.1:{port}"})
    error = assert_error(silent, 422)
    assert "did not answer" in error["message"]
    assert "nothing was stored" in error["message"]
    assert "url" in error["fields"]
    assert not Node.objects.exists()
    assert (
        "url" in assert_error(admin.post("/nodes", {"name": "x", "url": "ftp://h"}), 422)["fields"]
    )

    created = admin.post(
        "/nodes",
        {
            "name": "eu-1",
            "url": shared_scrapyd_node.url,
            "username": "crawl",
            "password": SECRET_PASSWORD,
            "tags": ["eu"],
            "capacity": 3,
        },
    )
    assert created.status_code == 201, created.content
    node = created.json()
    assert node["state"] == "up"
    assert node["has_credentials"] is True
    assert Node.objects.get(name="eu-1").password == SECRET_PASSWORD
    assert_error(admin.post("/nodes", {"name": "eu-1", "url": "http://127.0.0.1:9"}), 409)

    updated = admin.patch(f"/nodes/{node['id']}", {"tags": ["eu", "big"], "weight": 2})
    assert updated.json()["tags"] == ["eu", "big"]
    assert (
        "weight" in assert_error(admin.patch(f"/nodes/{node['id']}", {"weight": 0}), 422)["fields"]
    )
    assert_error(viewer.patch(f"/nodes/{node['id']}", {"weight": 3}), 403)

    bodies = [
        created.content,
        updated.content,
        viewer.get("/nodes").content,
        viewer.get(f"/nodes/{node['id']}").content,
        admin.post(f"/nodes/{node['id']}/sync").content,
        viewer.get("/openapi.json").content,
    ]
    for body in bodies:
        assert SECRET_PASSWORD.encode() not in body
        assert b'"password"' not in body or body is bodies[-1]

    assert admin.delete(f"/nodes/{node['id']}").status_code == 204
    assert not Node.objects.exists()


@pytest.mark.django_db
def test_nodes_are_drained_disabled_and_deleted_over_the_api_audited(admin, project):
    from controlplane.accounts.models import AuditEntry

    node = Node.objects.create(name="n1", url="http://127.0.0.1:9", state=Node.State.UP)
    drained = admin.patch(f"/nodes/{node.pk}", {"draining": True})
    assert drained.status_code == 200, drained.content
    assert (drained.json()["draining"], drained.json()["schedulable"]) == (True, False)
    body = admin.patch(f"/nodes/{node.pk}", {"draining": False, "enabled": False}).json()
    assert (body["draining"], body["enabled"], body["schedulable"]) == (False, False, False)
    assert (
        "draining"
        in assert_error(admin.patch(f"/nodes/{node.pk}", {"draining": None}), 422)["fields"]
    )

    job = create_adhoc_run(project, "books")
    Job.objects.filter(pk=job.pk).update(node=node, state=Job.State.RUNNING)
    refused = assert_error(admin.delete(f"/nodes/{node.pk}"), 409, "conflict")
    assert "1 job(s) are on node n1" in refused["message"]
    assert admin.delete(f"/nodes/{node.pk}?force=true").status_code == 204
    assert list(AuditEntry.objects.order_by("pk").values_list("action", "actor")) == [
        ("node.drain", "t-admin"),
        ("node.update", "t-admin"),
        ("node.delete", "t-admin"),
    ]


@pytest.mark.scrapyd
@pytest.mark.django_db
def test_node_registration_upserts_and_catches_the_node_up(scrapyd_node, failproject_egg):
    from controlplane.deploys.services import upload_version

    upload_version("failproject", failproject_egg.version, failproject_egg.data)  # no nodes yet
    registrar = Api(token("node"))
    payload = {
        "name": "self-1",
        "url": scrapyd_node.url + "/",
        "max_proc": 3,
        "tags": ["eu"],
        "scrapyd_version": "1.6.0",
        "password": SECRET_PASSWORD,
    }
    first = registrar.post("/nodes/register", payload)
    assert first.status_code == 201, first.content
    body = first.json()
    assert body["created"] is True
    assert body["node"]["capacity"] == 3
    assert body["node"]["self_registered"] is True
    assert body["sync"]["deployed"] == [f"failproject {failproject_egg.version}"]
    assert scrapyd_node.get("listversions.json", project="failproject")["versions"] == [
        failproject_egg.version
    ]
    assert SECRET_PASSWORD.encode() not in first.content

    again = registrar.post("/nodes/register", {**payload, "max_proc": 5, "tags": ["other"]})
    assert again.status_code == 200
    assert again.json()["node"]["capacity"] == 5
    assert again.json()["node"]["tags"] == ["eu"]  # operators own the tags after the first time
    assert again.json()["sync"]["present"] == [f"failproject {failproject_egg.version}"]
    assert Node.objects.count() == 1

    clash = registrar.post("/nodes/register", {**payload, "name": "self-2"})
    assert_error(clash, 409)
    assert_error(registrar.post("/nodes/register", {**payload, "max_proc": 0}), 422)


# --- projects and versions --------------------------------------------------------------------
@pytest.mark.scrapyd
@pytest.mark.django_db
def test_egg_upload_rollback_and_delete_over_the_api(
    operator, viewer, shared_scrapyd_node, failproject_egg
):
    Node.objects.create(name="n1", url=shared_scrapyd_node.url, state=Node.State.UP)

    def upload(version: str, data: bytes):
        return operator.client.post(
            "/api/v1/projects/apiproj/versions",
            data={"version": version, "egg": _file(data)},
            **operator.headers,
        )

    error = assert_error(upload("1", b"not a zip"), 422, "invalid_egg")
    assert "not a zip file" in error["message"]
    assert "egg" in error["fields"]
    assert not Project.objects.filter(name="apiproj").exists()
    assert "version" in assert_error(upload("v1", failproject_egg.data), 422)["fields"]
    assert_error(
        viewer.client.post(
            "/api/v1/projects/apiproj/versions",
            data={"version": "1", "egg": _file(failproject_egg.data)},
            **viewer.headers,
        ),
        403,
    )

    first = upload("1", failproject_egg.data)
    assert first.status_code == 201, first.content
    assert first.json()["nodes"][0]["ok"] is True
    assert "ok" in first.json()["spiders"]
    assert upload("2", failproject_egg.data).status_code == 201
    assert upload("2", failproject_egg.data).status_code == 200  # same bytes: idempotent

    detail = viewer.get("/projects/apiproj").json()
    assert detail["current_version"] == "2"
    assert [v["version"] for v in detail["version_list"]] == ["2", "1"]
    assert detail["version_list"][0]["deployments"][0]["state"] == "deployed"

    back = operator.post("/projects/apiproj/rollback", {"version": "1"})
    assert back.status_code == 200, back.content
    assert back.json()["current"] is True
    assert viewer.get("/projects/apiproj").json()["current_version"] == "1"
    assert_error(operator.post("/projects/apiproj/rollback", {"version": "9"}), 422)

    assert_error(operator.delete("/projects/apiproj/versions/1"), 409, "conflict")
    deleted = operator.delete("/projects/apiproj/versions/2")
    assert deleted.status_code == 200, deleted.content
    assert shared_scrapyd_node.get("listversions.json", project="apiproj")["versions"] == ["1"]
    assert_error(operator.delete("/projects/apiproj/versions/2"), 404)


def _file(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("project.egg", data, content_type="application/octet-stream")


# --- over the wire ----------------------------------------------------------------------------
@pytest.mark.scrapyd
def test_real_web_server_auth_registration_and_report(cp_web, scrapyd_nodes, failproject_egg):
    """A real ``crawlfleet web`` and a real ``crawlfleet node --register``."""
    node_secret = token("node", "fleet-nodes")
    admin_secret = token("admin", "root")
    viewer_secret = token("viewer", "eyes")
    api = f"{cp_web}/api/v1"

    assert requests.get(f"{api}/nodes", timeout=10).status_code == 401
    assert (
        requests.get(
            f"{api}/nodes", headers={"Authorization": f"Bearer {viewer_secret}"}, timeout=10
        ).json()
        == []
    )
    refused = requests.post(
        f"{api}/nodes",
        json={"name": "x", "url": "http://127.0.0.1:9"},
        headers={"Authorization": f"Bearer {viewer_secret}"},
        timeout=10,
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"

    [node] = scrapyd_nodes(1, register=cp_web, token=node_secret, heartbeat=1, tags=["eu"])
    deadline = time.monotonic() + 30
    while not Node.objects.filter(name=node.name).exists():
        assert time.monotonic() < deadline, node.log_tail()
        time.sleep(0.2)
    row = Node.objects.get(name=node.name)
    assert row.self_registered
    assert row.url == node.url
    assert row.tags == ["eu"]
    assert row.capacity == 2

    # An egg uploaded over HTTP lands on the registered node.
    upload = requests.post(
        f"{api}/projects/failproject/versions",
        headers={"Authorization": f"Bearer {admin_secret}"},
        data={"version": "5"},
        files={"egg": ("failproject.egg", failproject_egg.data)},
        timeout=60,
    )
    assert upload.status_code == 201, upload.text
    assert [r["node"] for r in upload.json()["nodes"]] == [node.name]
    assert node.get("listversions.json", project="failproject")["versions"] == ["5"]
    assert NodeDeployment.objects.filter(node=row, state="deployed").count() == 1

    job = create_adhoc_run(Project.objects.get(name="failproject"), "ok")
    wrong = requests.post(
        f"{api}/report/{job.scrapyd_job_id}",
        json={"event": "started"},
        headers={"Authorization": "Bearer wrong"},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthenticated"
    assert TaskRun.objects.count() == 1


def test_token_cli_creates_lists_and_revokes(cp_web, cp_env):
    """``crawlfleet token``: the secret is printed once and works until revoked."""

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "crawlfleet"), "token", *argv],
            env=cp_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = cli("create", "jenkins", "--role", "operator")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("cf_")
    assert "shown only now" in created.stderr
    assert cli("create", "jenkins").returncode == 1
    assert cli("create", "bad name").returncode == 2

    headers = {"Authorization": f"Bearer {secret}"}
    assert requests.get(f"{cp_web}/api/v1/jobs", headers=headers, timeout=10).status_code == 200
    listing = cli("list")
    assert "jenkins\toperator\tcf_" in listing.stdout
    assert secret not in listing.stdout
    assert ApiToken.objects.get(name="jenkins").key_hash != secret

    assert cli("revoke", "jenkins").returncode == 0
    assert requests.get(f"{cp_web}/api/v1/jobs", headers=headers, timeout=10).status_code == 401
    assert cli("revoke", "jenkins").returncode == 1
