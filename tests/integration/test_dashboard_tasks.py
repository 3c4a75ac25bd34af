"""The dashboard's task pages in-process: every field through the form, every bad input refused
beside its field with nothing saved, permissions, the audit trail, the cron preview, run now,
delete, the run history and its query budget.
"""

from __future__ import annotations

import html
import json

import pytest

from controlplane.accounts.models import ApiToken, AuditEntry
from controlplane.deploys.models import Project
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task
from tests.fixtures.taskpages import FORM, add_version, make_task

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def error_beside(response, field: str) -> str:
    """The messages rendered in ``field``'s error slot (``<div id="<field>-error">``)."""
    form = response.context["form"]
    assert field in form.errors, (field, form.errors)
    page = response.content.decode()
    for message in form.errors[field]:
        assert f'id="{field}-error">{html.escape(message)}</div>' in page, message
    return " ".join(form.errors[field])


def api_client(client):
    """``call(method, path, body)`` on the REST API with an operator token."""
    secret = ApiToken.create("ci", "operator")[1]

    def call(method: str, path: str, body: dict):
        return getattr(client, method)(
            f"/api/v1{path}",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )

    return call


# --- creating ------------------------------------------------------------------------------
def test_every_field_is_saved_and_the_creation_audited(operator_client, task_project):
    Node.objects.create(name="n1", url="http://127.0.0.1:6801", tags=["eu"])
    Node.objects.create(name="n2", url="http://127.0.0.1:6802")
    response = operator_client.post(
        "/tasks/new/",
        {
            **FORM,
            "spider": "quotes",
            "version": "100",
            "args": "category=travel\n# a comment\n\npages = 3",
            "settings": '{"DOWNLOAD_DELAY": "0.5"}',
            "cron": "*/15 6-18 * * mon-fri",
            "timezone": "Europe/Paris",
            "enabled": "",
            "misfire_grace": "120",
            "selector": "nodes",
            "selector_tags": "eu, fast",
            "selector_nodes": ["n1", "n2"],
            "fanout": "2",
            "max_attempts": "5",
            "retry_backoff": "12.5",
            "retry_backoff_factor": "1.5",
            "max_runtime": "3600",
            "error_threshold": "4",
            "overlap": "queue",
        },
    )
    task = Task.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/tasks/{task.pk}/"
    assert (task.spider, task.version.version) == ("quotes", "100")
    assert task.args == {"category": "travel", "pages": "3"}
    assert task.settings == {"DOWNLOAD_DELAY": "0.5"}
    assert (task.cron, task.timezone, task.enabled) == (
        "*/15 6-18 * * mon-fri",
        "Europe/Paris",
        False,
    )
    assert (task.selector, task.selector_tags) == ("nodes", ["eu", "fast"])
    assert sorted(task.selector_nodes.values_list("name", flat=True)) == ["n1", "n2"]
    assert (task.fanout, task.max_attempts, task.retry_backoff) == (2, 5, 12.5)
    assert (task.retry_backoff_factor, task.max_runtime, task.error_threshold) == (1.5, 3600, 4)
    assert (task.misfire_grace, task.overlap) == (120, "queue")
    entry = AuditEntry.objects.get(action="task.create")
    assert (entry.actor, entry.target) == ("operator-user", "nightly")
    assert entry.detail["fields"]["selector_nodes"] == ["n1", "n2"]
    assert entry.detail["fields"]["version"] == "100"
    page = operator_client.get(response["Location"]).content.decode()
    assert "Task nightly created." in page


BAD_INPUTS = [
    ("cron", {"cron": "61 * * *"}, "has 4 fields"),
    ("cron", {"cron": "0 25 * * *"}, "hour"),
    ("timezone", {"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
    ("spider", {"spider": "nosuch"}, "unknown spider 'nosuch' in crawler 100"),
    ("spider", {"spider": "quotes", "version": "90"}, "unknown spider 'quotes' in crawler 90"),
    ("project", {"project": "nope"}, "unknown project 'nope'"),
    ("version", {"version": "7"}, "crawler has no version '7'"),
    ("retry_backoff", {"retry_backoff": "-5"}, "greater than or equal to 0"),
    ("retry_backoff_factor", {"retry_backoff_factor": "0.5"}, "greater than or equal to 1"),
    ("max_attempts", {"max_attempts": "0"}, "greater than or equal to 1"),
    ("fanout", {"fanout": "many"}, "whole number"),
    ("args", {"args": "category travel"}, "line 1: expected name=value, got 'category travel'"),
    ("args", {"args": '{"category": '}, "not valid JSON"),
    ("args", {"args": '["a"]'}, "JSON must be an object"),
    ("args", {"args": "a b=1"}, "'a b' is not a valid name"),
    ("args", {"args": "_version=3"}, "reserved by Scrapyd"),
    ("settings", {"settings": "X=1\nX=2"}, "line 2: 'X' is given twice"),
    ("selector_nodes", {"selector": "nodes"}, "select at least one node"),
    ("selector_tags", {"selector": "tags"}, "select at least one tag"),
    ("selector_tags", {"selector": "tags", "selector_tags": "bad tag!"}, "tags must be"),
    ("name", {"name": "has space"}, "not a valid name"),
    ("name", {"name": ""}, "This field is required"),
]


@pytest.mark.parametrize(("field", "change", "message"), BAD_INPUTS)
def test_a_bad_input_is_refused_beside_its_field_and_nothing_is_saved(
    operator_client, field, change, message
):
    response = operator_client.post("/tasks/new/", {**FORM, **change})
    assert response.status_code == 422
    assert message in error_beside(response, field)
    assert "Nothing was saved" in response.content.decode()
    assert not Task.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="task.").exists()


def test_every_problem_shows_at_once(operator_client):
    """A field the form refuses does not hide the domain's messages about the others."""
    response = operator_client.post(
        "/tasks/new/", {**FORM, "args": "oops", "cron": "61 * * *", "spider": "nosuch"}
    )
    assert response.status_code == 422
    assert "line 1" in error_beside(response, "args")
    assert "4 fields" in error_beside(response, "cron")
    assert "unknown spider" in error_beside(response, "spider")
    # The preview does not repeat the message; the inputs keep what was typed.
    page = response.content.decode()
    assert "once the schedule is valid" in page
    assert page.count("has 4 fields") == 1
    assert 'value="61 * * *"' in page


def test_a_duplicate_name_already_exists(operator_client, task_project):
    make_task(task_project)
    response = operator_client.post("/tasks/new/", FORM)
    assert response.status_code == 409
    assert error_beside(response, "name") == "already exists"
    assert Task.objects.count() == 1


# --- editing -------------------------------------------------------------------------------
def test_editing_audits_the_changed_fields_only(operator_client, task_project):
    task = make_task(task_project, args={"category": "travel"}, settings={"RETRIES": 2})
    form = operator_client.get(f"/tasks/{task.pk}/edit/").context["form"]
    unchanged = {**FORM, **{k: v for k, v in form.initial.items() if k in FORM and v is not None}}
    unchanged["enabled"] = "on"
    response = operator_client.post(f"/tasks/{task.pk}/edit/", unchanged)
    assert response.status_code == 302
    assert not AuditEntry.objects.filter(action="task.update").exists()  # nothing changed
    assert Task.objects.get().settings == {"RETRIES": 2}  # JSON kept the number

    response = operator_client.post(
        f"/tasks/{task.pk}/edit/", {**unchanged, "cron": "30 4 * * *", "max_attempts": "1"}
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="task.update")
    assert entry.detail["changes"] == {"cron": ["0 3 * * *", "30 4 * * *"], "max_attempts": [3, 1]}

    response = operator_client.post(
        f"/tasks/{task.pk}/edit/", {**unchanged, "timezone": "Nowhere/Else"}
    )
    assert response.status_code == 422
    assert "unknown timezone" in error_beside(response, "timezone")
    assert Task.objects.get().cron == "30 4 * * *"


def test_the_spider_is_checked_against_the_version_runs_use_on_both_faces(
    operator_client, task_project
):
    """Pinned version first, then the current one, then the newest: the API says the same."""
    response = operator_client.post("/tasks/new/", {**FORM, "spider": "quotes", "version": "90"})
    assert "unknown spider 'quotes' in crawler 90" in error_beside(response, "spider")
    Project.objects.filter(pk=task_project.pk).update(current_version=None)
    add_version(task_project, "80", ["quotes"])  # older than 100, which runs use now
    response = operator_client.post("/tasks/new/", {**FORM, "spider": "legacy"})
    assert "in crawler 100; it has: books, quotes" in error_beside(response, "spider")

    body = {**{k: FORM[k] for k in ("name", "project", "cron")}, "spider": "legacy"}
    api = api_client(operator_client)("post", "/tasks", body)
    assert api.status_code == 422
    assert "in crawler 100" in api.json()["error"]["fields"]["spider"][0]
    assert not Task.objects.exists()


def test_a_task_whose_spider_vanished_can_still_be_disabled(operator_client, task_project):
    task = make_task(task_project, spider="quotes")
    task_project.current_version = add_version(task_project, "200", ["books"])
    task_project.save()
    response = operator_client.post(f"/tasks/{task.pk}/enabled/", {"enabled": "0"})
    assert response.status_code == 302
    assert not Task.objects.get().enabled
    entry = AuditEntry.objects.get(action="task.update")
    assert entry.detail["changes"] == {"enabled": [True, False]}
    # Enabling it again checks the task: the spider is gone.
    operator_client.post(f"/tasks/{task.pk}/enabled/", {"enabled": "1"})
    assert not Task.objects.get().enabled
    page = operator_client.get(f"/tasks/{task.pk}/").content.decode()
    assert "cannot be enabled" in page
    assert "unknown spider &#x27;quotes&#x27;" in page

    # The REST API disables it the same way (and refuses to enable it the same way).
    Task.objects.filter(pk=task.pk).update(enabled=True)
    api = api_client(operator_client)
    assert api("patch", f"/tasks/{task.pk}", {"enabled": False}).status_code == 200
    assert not Task.objects.get().enabled
    refused = api("patch", f"/tasks/{task.pk}", {"enabled": True})
    assert refused.status_code == 422
    assert "unknown spider 'quotes'" in refused.json()["error"]["fields"]["spider"][0]


# --- the cron preview ----------------------------------------------------------------------
def test_the_cron_preview_lists_five_fires_on_the_tasks_clock_and_in_utc(viewer_client):
    response = viewer_client.get(
        "/tasks/cron-preview/", {"cron": "30 9 * * *", "timezone": "Asia/Tokyo"}
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("09:30 JST") == 5
    assert page.count("00:30 UTC") == 5
    assert "<form" not in page
    assert "<html" not in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"cron": "0 25 * * *", "timezone": "UTC"}, "hour"),
        ({"cron": "* * *", "timezone": "UTC"}, "has 3 fields"),
        ({"cron": "@sometimes", "timezone": "UTC"}, "unknown cron macro"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
    ],
)
def test_the_cron_preview_explains_a_bad_expression(viewer_client, query, message):
    response = viewer_client.get("/tasks/cron-preview/", query)
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert 'class="field-error"' in page
    assert message in page
    assert "UTC</td>" not in page


def test_the_cron_preview_needs_a_login_and_asks_for_an_expression(client, viewer_client):
    assert "Type a cron expression" in viewer_client.get("/tasks/cron-preview/").content.decode()
    client.logout()
    assert client.get("/tasks/cron-preview/?cron=*").status_code == 302
