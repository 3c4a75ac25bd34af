"""Malformed request bodies get a 4xx in the error envelope on every write route, never a 500.

The routes come from the API's own OpenAPI schema, so a new route is in the matrix without
touching this file. Every path names real objects, so a route that ignored its body would act
(cancel the job, run the task, ...): the database must be exactly as it was afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from django.apps import apps
from django.test import Client

from controlplane.accounts.models import ApiToken
from controlplane.alerts.models import AlertRule, Channel
from controlplane.api.errors import CODES
from controlplane.api.request_body import MAX_JSON_BYTES
from controlplane.api.rest import api
from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task
from tests.fixtures.jobs import create_adhoc_run

WRITE_METHODS = ("post", "put", "patch", "delete")
BOUNDARY = "crawlfleet-test-boundary"
SMALL_UPLOAD_LIMIT = 4096


def write_routes() -> list[tuple[str, str]]:
    """(method, path template) of every write operation the API documents."""
    paths = api.get_openapi_schema()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in WRITE_METHODS
    ]


ROUTES = [pytest.param(method, path, id=f"{method} {path}") for method, path in write_routes()]


def multipart(*parts: tuple[str, bytes], close: bool = True) -> bytes:
    body = b""
    for name, value in parts:
        body += f"--{BOUNDARY}\r\n".encode()
        body += f'Content-Disposition: form-data; name="{name}"'.encode()
        if name == "egg":
            body += b'; filename="project.egg"\r\nContent-Type: application/octet-stream'
        body += b"\r\n\r\n" + value + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


@dataclass(frozen=True)
class Malformed:
    body: bytes
    content_type: str
    status: int
    meta: dict[str, str] = field(default_factory=dict)
    upload_limit: int | None = None  # DATA_UPLOAD_MAX_MEMORY_SIZE for this case


WITH_BOUNDARY = f"multipart/form-data; boundary={BOUNDARY}"
EGG_PARTS = (("version", b"7"), ("egg", b"PK\x03\x04 not really a zip"))
CASES: dict[str, Malformed] = {
    "multipart without boundary": Malformed(multipart(*EGG_PARTS), "multipart/form-data", 400),
    # Found by the schema fuzzer: no body at all, so the length check let it through.
    "empty multipart without boundary": Malformed(
        b"", "multipart/form-data", 400, {"CONTENT_TYPE": "multipart/form-data"}
    ),
    "truncated multipart": Malformed(multipart(*EGG_PARTS, close=False), WITH_BOUNDARY, 400),
    "multipart with invalid boundary": Malformed(
        b"--a b \r\n\r\n--a b --\r\n", 'multipart/form-data; boundary="a b "', 400
    ),
    "multipart with too many parts": Malformed(
        multipart(*[(f"field{i}", b"x") for i in range(1001)]), WITH_BOUNDARY, 400
    ),
    "invalid JSON": Malformed(b'{"name": "x",', "application/json", 400),
    "JSON array": Malformed(b'[{"name": "x"}]', "application/json", 400),
    "JSON null": Malformed(b"null", "application/json", 400),
    "JSON string": Malformed(b'"x"', "application/json", 400),
    "JSON NaN": Malformed(b'{"weight": NaN}', "application/json", 400),
    "JSON number out of range": Malformed(b'{"weight": 1e999}', "application/json", 400),
    "deeply nested JSON": Malformed(b"[" * 200_000, "application/json", 400),
    "JSON with NUL": Malformed(b'{"name": "a\\u0000b"}', "application/json", 400),
    "non-UTF-8 JSON": Malformed(b'{"name": "caf\xe9"}', "application/json", 400),
    "UTF-16 JSON": Malformed('{"name": "x"}'.encode("utf-16"), "application/json", 400),
    "text/plain": Malformed(b'{"name": "x"}', "text/plain", 415),
    "form-urlencoded": Malformed(b"name=x&version=1", "application/x-www-form-urlencoded", 415),
    "no content type": Malformed(b'{"name": "x"}', "", 415),
    "oversize JSON": Malformed(
        b'{"name": "' + b"x" * MAX_JSON_BYTES + b'"}', "application/vnd.api+json", 413
    ),
    "oversize multipart": Malformed(
        multipart(("version", b"7"), ("egg", b"x" * SMALL_UPLOAD_LIMIT)),
        WITH_BOUNDARY,
        413,
        upload_limit=SMALL_UPLOAD_LIMIT,
    ),
    "invalid Content-Length": Malformed(
        b'{"name": "x"}', "application/json", 400, {"CONTENT_LENGTH": "twelve"}
    ),
    "chunked without length": Malformed(
        b'{"name": "x"}',
        "application/json",
        411,
        {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"},
    ),
}


@pytest.fixture
def targets(db) -> dict[str, Any]:
    """One real object for every path parameter, and credentials that may call every route."""
    node = Node.objects.create(name="node-a", url="http://127.0.0.1:9", state=Node.State.UP)
    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="100", egg=b"egg", sha256="0" * 64, size=3, spiders=["books"]
    )
    project.current_version = version
    project.save()
    task = Task.objects.create(name="nightly", project=project, spider="books", cron="0 3 * * *")
    job = create_adhoc_run(project, "books")
    report_secret = job.issue_report_token()
    job.state = Job.State.RUNNING
    job.save()
    token, admin_secret = ApiToken.create("root", ApiToken.Role.ADMIN)
    channel = Channel.objects.create(name="hook", kind="webhook", url="http://127.0.0.1:9/in")
    rule = AlertRule.objects.create(name="all", channel=channel)
    return {
        "params": {
            "node_id": node.pk,
            "name": project.name,
            "version": version.version,
            "task_id": task.pk,
            "job_id": job.pk,
            "token_id": token.pk,
            "scrapyd_job_id": job.scrapyd_job_id,
            "channel_id": channel.pk,
            "rule_id": rule.pk,
            "tag": "eu",
        },
        "admin": admin_secret,
        "report": report_secret,
    }


@pytest.fixture(scope="module")
def api_client() -> Client:
    """One client for the module: each new one loads the middleware (whitenoise scans files)."""
    return Client()


def fill(template: str, params: dict[str, Any]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in params, f"add a real object for the path parameter {name!r} to targets"
        return str(params[name])

    return re.sub(r"\{(\w+)\}", value, template)


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every model; authentication's own bookkeeping (last_used) left out."""
    rows = {}
    for model in apps.get_models():
        values = list(model.objects.order_by("pk").values())
        if model is ApiToken:
            for row in values:
                row.pop("last_used")
        rows[model._meta.label] = values
    return rows


def assert_envelope(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == CODES[status]
    assert error["message"]
    return error


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize(("method", "template"), ROUTES)
def test_malformed_body_is_refused_and_changes_nothing(
    method, template, case, targets, settings, api_client
):
    malformed = CASES[case]
    if malformed.upload_limit is not None:
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = malformed.upload_limit
    path = fill(template, targets["params"])
    secret = targets["report"] if path.startswith("/api/v1/report/") else targets["admin"]
    before = snapshot()

    response = api_client.generic(
        method,
        path,
        data=malformed.body,
        content_type=malformed.content_type,
        HTTP_AUTHORIZATION=f"Bearer {secret}",
        **malformed.meta,
    )

    assert_envelope(response, malformed.status)
    assert snapshot() == before


def test_every_kind_of_write_route_is_in_the_matrix():
    routes = write_routes()
    assert ("POST", "/api/v1/projects/{name}/versions") in routes  # multipart
    assert ("PATCH", "/api/v1/tasks/{task_id}") in routes  # JSON
    assert ("POST", "/api/v1/jobs/{job_id}/cancel") in routes  # no body
    assert ("DELETE", "/api/v1/nodes/{node_id}") in routes


def test_multipart_without_boundary_over_the_wire(cp_web):
    """Gunicorn hands the body over differently from the test client: the same answers."""
    secret = ApiToken.create("root", ApiToken.Role.ADMIN)[1]
    url = f"{cp_web}/api/v1/projects/crawler/versions"
    auth = {"Authorization": f"Bearer {secret}"}

    no_boundary = requests.post(
        url,
        data=multipart(*EGG_PARTS),
        headers={**auth, "Content-Type": "multipart/form-data"},
        timeout=30,
    )
    assert no_boundary.status_code == 400, no_boundary.text
    assert no_boundary.json()["error"]["code"] == "bad_request"
    assert "boundary" in no_boundary.json()["error"]["message"]

    chunked = requests.post(
        url,
        data=iter([multipart(*EGG_PARTS)]),
        headers={**auth, "Content-Type": WITH_BOUNDARY},
        timeout=30,
    )
    assert chunked.status_code == 411, chunked.text
    assert chunked.json()["error"]["code"] == "length_required"

    assert not Project.objects.exists()


def test_a_wrong_method_answers_the_envelope(client, db):
    response = client.delete("/api/v1/jobs")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "DELETE is not allowed" in response.json()["error"]["message"]
