"""Monitor rules on the task and project pages, in-process: an operator adds, edits, overrides,
switches off and deletes rules (audited as them); malformed input is refused beside its input
with 422 and stores nothing; a viewer sees no forms and gets 403 on every POST. The job page's
verdict: test_dashboard_monitors_jobs.py."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.accounts.models import AuditEntry
from controlplane.monitors import services
from controlplane.monitors.models import MonitorRule, effective_rules
from controlplane.scheduling.models import Task
from tests.fixtures.taskpages import make_task

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def task(task_project) -> Task:
    return make_task(task_project)


def default(project, kind: str, params: dict, outcome: str = "degraded") -> MonitorRule:
    rule = services.new_rule(project)
    return services.save_rule(rule, {"kind": kind, "params": params, "outcome": outcome})


def card_rows(page: str) -> dict[str, str]:
    """The Monitors card's rows by kind: each row's text, tags stripped."""
    card = page[page.index('id="monitors"') :]
    rows = re.findall(r'<tr data-rule="\d+" data-kind="(\w+)"[^>]*>(.*?)</tr>', card, re.S)
    return {kind: " ".join(re.sub(r"<[^>]+>", " ", html).split()) for kind, html in rows}


def error_beside(page: str, name: str) -> str:
    found = re.search(rf'<div class="field-error" id="{name}-error">([^<]*)</div>', page)
    return found.group(1) if found else ""


def monitor_audit() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action__startswith="monitor.").order_by("pk"))


# --- a task's rules ----------------------------------------------------------------------------
def test_the_task_page_lists_its_own_rules_and_the_defaults_it_does_not_replace(
    operator_client, task, task_project
):
    default(task_project, "min_items", {"count": 100}, outcome="failed")
    default(task_project, "stall", {"seconds": 300})
    services.save_rule(
        services.new_rule(task_project, task),
        {"kind": "status_share", "params": {"status": 403, "percent": 5}},
    )
    page = operator_client.get(f"/tasks/{task.pk}/").content.decode()
    rows = card_rows(page)
    assert rows["min_items"].startswith("at least 100 items min_items project default failed yes")
    assert "Switch off here" in rows["min_items"]
    assert "Override" in rows["min_items"]
    assert "checked while the job runs" in rows["stall"]
    assert rows["status_share"].startswith("HTTP 403 on at most 5% of responses")
    assert " task degraded yes Edit Delete" in rows["status_share"]
    assert f'action="/tasks/{task.pk}/monitors/new/"' in page
    assert 'src="/static/dashboard/sections/monitors.js"' in page


def test_an_operator_adds_edits_overrides_switches_off_and_deletes_a_tasks_rules(
    operator_client, task, task_project
):
    items = default(task_project, "min_items", {"count": 100}, outcome="failed")
    share = default(task_project, "status_share", {"status": 403, "percent": 10})
    AuditEntry.objects.all().delete()

    # Add: the kind, its parameters (another kind's input is ignored), the outcome.
    response = operator_client.post(
        f"/tasks/{task.pk}/monitors/new/",
        {
            "kind": "field_coverage",
            "field": "price",
            "percent": "90",
            "count": "7",
            "outcome": "degraded",
            "enabled": "on",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"/tasks/{task.pk}/#monitors"
    coverage = MonitorRule.objects.get(task=task, kind="field_coverage")
    assert (coverage.params, coverage.target, coverage.enabled) == (
        {"field": "price", "percent": 90},
        "price",
        True,
    )
    page = operator_client.get(response["Location"]).content.decode()
    assert "Monitor rule “field &#x27;price&#x27; filled in at least 90%” added" in page
    assert "field &#x27;price&#x27; filled in at least 90%" in card_rows(page)["field_coverage"]

    # Edit: its form shows its values; the kind stays.
    form = operator_client.get(f"/tasks/{task.pk}/monitors/{coverage.pk}/").content.decode()
    assert 'name="percent" value="90"' in form
    assert 'name="kind"' not in form
    response = operator_client.post(
        f"/tasks/{task.pk}/monitors/{coverage.pk}/",
        {"field": "price", "percent": "75.5", "outcome": "failed"},
    )
    assert response.status_code == 302
    coverage.refresh_from_db()
    assert (coverage.params["percent"], coverage.outcome, coverage.enabled) == (
        75.5,
        "failed",
        False,
    )

    # Override a default with other values: the form starts from the default's.
    form = operator_client.get(f"/tasks/{task.pk}/monitors/new/?like={items.pk}").content.decode()
    assert "Override the project default “at least 100 items”" in form
    assert 'name="count" value="100"' in form
    response = operator_client.post(
        f"/tasks/{task.pk}/monitors/new/",
        {"kind": "min_items", "count": "5", "outcome": "degraded", "enabled": "on"},
    )
    assert response.status_code == 302
    # Switch a default off for this task only.
    response = operator_client.post(f"/tasks/{task.pk}/monitors/{share.pk}/off/")
    assert response.status_code == 302
    off = MonitorRule.objects.get(task=task, kind="status_share")
    assert (off.enabled, off.params, off.target) == (False, share.params, "403")

    page = operator_client.get(f"/tasks/{task.pk}/").content.decode()
    assert "is off for task nightly" in page
    rows = card_rows(page)
    assert "replaces the default “at least 100 items”" in rows["min_items"]
    assert "switches off the default “HTTP 403 on at most 10% of responses”" in rows["status_share"]
    assert {r.kind: r.params for r in effective_rules(task_project.pk, task.pk)} == {
        "min_items": {"count": 5}
    }  # the coverage rule was switched off in its edit
    other = make_task(task_project, name="other")
    assert {r.pk for r in effective_rules(task_project.pk, other.pk)} == {items.pk, share.pk}

    # Delete: the default applies again.
    own = MonitorRule.objects.get(task=task, kind="min_items")
    response = operator_client.post(f"/tasks/{task.pk}/monitors/{own.pk}/delete/")
    assert response.status_code == 302
    assert not MonitorRule.objects.filter(pk=own.pk).exists()
    assert (
        "at least 100 items"
        in card_rows(operator_client.get(f"/tasks/{task.pk}/").content.decode())["min_items"]
    )

    entries = monitor_audit()
    assert [e.action for e in entries] == [
        "monitor.create",
        "monitor.update",
        "monitor.create",
        "monitor.create",
        "monitor.delete",
    ]
    assert {(e.actor_kind, e.actor) for e in entries} == {("user", "operator-user")}
    assert entries[0].detail["params"] == {"field": "price", "percent": 90}
    assert entries[1].detail["changes"]["enabled"] == [True, False]
    assert entries[3].detail["enabled"] is False


def test_a_rule_of_another_scope_is_not_found_here(operator_client, task, task_project):
    items = default(task_project, "min_items", {"count": 100})
    other = make_task(task_project, name="other")
    theirs = services.save_rule(
        services.new_rule(task_project, other), {"kind": "max_errors", "params": {"count": 0}}
    )
    assert operator_client.get(f"/tasks/{task.pk}/monitors/{theirs.pk}/").status_code == 404
    assert operator_client.post(f"/tasks/{task.pk}/monitors/{theirs.pk}/delete/").status_code == 404
    # A default is edited on its project's page, not through a task.
    assert operator_client.post(f"/tasks/{task.pk}/monitors/{items.pk}/delete/").status_code == 404
    assert operator_client.post(f"/tasks/{task.pk}/monitors/{theirs.pk}/off/").status_code == 404
    assert MonitorRule.objects.count() == 2


# --- a project's defaults ----------------------------------------------------------------------
def test_an_operator_adds_edits_and_deletes_a_projects_defaults(
    operator_client, task, task_project
):
    url = f"/projects/{task_project.pk}/monitors/new/"
    response = operator_client.post(
        url,
        {"kind": "history", "metric": "pages", "percent": "50", "runs": "", "outcome": "failed"},
    )
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{task_project.pk}/#monitors"
    rule = MonitorRule.objects.get()
    assert (rule.task, rule.params, rule.enabled) == (
        None,
        {"metric": "pages", "percent": 50, "runs": 10},
        False,  # the checkbox was not sent
    )
    page = operator_client.get(f"/projects/{task_project.pk}/").content.decode()
    row = card_rows(page)["history"]
    assert row.startswith("pages at least 50% of the median of the last 10 runs history failed off")
    assert "Edit Delete" in row
    # It is a default of the project's tasks.
    assert (
        "project default"
        in card_rows(operator_client.get(f"/tasks/{task.pk}/").content.decode())["history"]
    )

    response = operator_client.post(
        f"/projects/{task_project.pk}/monitors/{rule.pk}/",
        {"metric": "items", "percent": "60", "runs": "5", "outcome": "degraded", "enabled": "on"},
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.params, rule.target, rule.outcome, rule.enabled) == (
        {"metric": "items", "percent": 60, "runs": 5},
        "items",
        "degraded",
        True,
    )
    response = operator_client.post(f"/projects/{task_project.pk}/monitors/{rule.pk}/delete/")
    assert response.status_code == 302
    assert not MonitorRule.objects.exists()
    assert [e.action for e in monitor_audit()] == [
        "monitor.create",
        "monitor.update",
        "monitor.delete",
    ]
    assert monitor_audit()[0].detail["task"] is None


# --- refused input -----------------------------------------------------------------------------
SHARE = {"kind": "status_share", "percent": "10"}
COVERAGE = {"kind": "field_coverage", "percent": "50"}
MALFORMED = [
    (
        {**SHARE, "status": "403", "percent": "-5"},
        "percent",
        "percent must be from 0 to 100, not -5",
    ),
    ({**SHARE, "status": "499"}, "status", "499 is not a known HTTP status code"),
    ({**COVERAGE, "field": "bad name"}, "field", "field must be an item field name such as price"),
    ({"kind": "nosuch", "count": "3"}, "kind", "unknown rule kind &#x27;nosuch&#x27;; one of"),
    ({"kind": "min_items", "count": "many"}, "count", "enter a whole number"),
    ({"kind": "min_items", "count": ""}, "count", "count must be a whole number"),
    ({"kind": "max_runtime", "seconds": "0"}, "seconds", "seconds must be at least 1"),
    ({"kind": "min_items", "count": "5", "outcome": "maybe"}, "outcome", "one of failed, degraded"),
]


@pytest.mark.parametrize("scope", ["task", "project"])
@pytest.mark.parametrize(("data", "name", "message"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_input_is_refused_beside_its_input_and_nothing_is_stored(
    operator_client, task, task_project, scope, data, name, message
):
    owner = task.pk if scope == "task" else task_project.pk
    response = operator_client.post(
        f"/{scope}s/{owner}/monitors/new/", {"outcome": "degraded", "enabled": "on", **data}
    )
    assert response.status_code == 422
    page = response.content.decode()
    assert error_beside(page, name).startswith(message), page
    assert "Nothing was saved" in page
    if data[name] and name not in ("kind", "outcome"):
        assert f'name="{name}" value="{data[name]}"' in page  # kept as typed
    assert not MonitorRule.objects.exists()
    assert monitor_audit() == []


def test_every_problem_shows_at_once_and_an_edit_refused_changes_nothing(
    operator_client, task, task_project
):
    response = operator_client.post(
        f"/tasks/{task.pk}/monitors/new/",
        {"kind": "status_share", "status": "499", "percent": "lots", "outcome": "degraded"},
    )
    assert response.status_code == 422
    page = response.content.decode()
    assert error_beside(page, "percent") == "enter a number"
    assert error_beside(page, "status") == "499 is not a known HTTP status code"

    rule = services.save_rule(
        services.new_rule(task_project, task),
        {"kind": "status_share", "params": {"status": 403, "percent": 10}},
    )
    response = operator_client.post(
        f"/tasks/{task.pk}/monitors/{rule.pk}/",
        {"status": "403", "percent": "101", "outcome": "failed", "enabled": "on"},
    )
    assert response.status_code == 422
    assert (
        error_beside(response.content.decode(), "percent")
        == "percent must be from 0 to 100, not 101"
    )
    rule.refresh_from_db()
    assert (rule.params, rule.outcome) == ({"status": 403, "percent": 10}, "degraded")
    assert [e.action for e in monitor_audit()] == ["monitor.create"]


def test_a_second_rule_of_the_same_kind_and_target_is_a_conflict(
    operator_client, task, task_project
):
    services.save_rule(
        services.new_rule(task_project, task),
        {"kind": "status_share", "params": {"status": 403, "percent": 10}},
    )
    data = {"kind": "status_share", "status": "403", "percent": "20", "outcome": "degraded"}
    response = operator_client.post(f"/tasks/{task.pk}/monitors/new/", data)
    assert response.status_code == 409
    assert error_beside(response.content.decode(), "kind") == "already set here"
    # Another status is another target.
    response = operator_client.post(f"/tasks/{task.pk}/monitors/new/", {**data, "status": "429"})
    assert response.status_code == 302
    assert MonitorRule.objects.count() == 2
    # Switching off a default the task already overrides is refused with a message.
    share = default(task_project, "status_share", {"status": 403, "percent": 1})
    response = operator_client.post(f"/tasks/{task.pk}/monitors/{share.pk}/off/", follow=True)
    assert (
        "Not switched off: task nightly already has a status_share (403) rule"
        in response.content.decode()
    )
    assert MonitorRule.objects.count() == 3


# --- who may --------------------------------------------------------------------------------------
def test_a_viewer_sees_the_rules_but_no_forms_and_every_post_is_forbidden(
    viewer_client, task, task_project
):
    items = default(task_project, "min_items", {"count": 100})
    own = services.save_rule(
        services.new_rule(task_project, task), {"kind": "max_errors", "params": {"count": 0}}
    )
    for url in (f"/tasks/{task.pk}/", f"/projects/{task_project.pk}/"):
        page = viewer_client.get(url).content.decode()
        assert "at least 100 items" in card_rows(page)["min_items"]
        assert "/monitors/" not in page.replace("#monitors", "")
        assert "Add a rule" not in page
        assert "Switch off here" not in page
    data = {"kind": "min_items", "count": "1", "outcome": "degraded", "enabled": "on"}
    posts = [
        (f"/tasks/{task.pk}/monitors/new/", data),
        (f"/tasks/{task.pk}/monitors/{own.pk}/", {"count": "9", "outcome": "failed"}),
        (f"/tasks/{task.pk}/monitors/{own.pk}/delete/", {}),
        (f"/tasks/{task.pk}/monitors/{items.pk}/off/", {}),
        (f"/projects/{task_project.pk}/monitors/new/", data),
        (f"/projects/{task_project.pk}/monitors/{items.pk}/", {"count": "9", "outcome": "failed"}),
        (f"/projects/{task_project.pk}/monitors/{items.pk}/delete/", {}),
    ]
    for url, body in posts:
        assert viewer_client.post(url, body).status_code == 403, url
    assert viewer_client.get(f"/tasks/{task.pk}/monitors/new/").status_code == 403
    assert {(r.pk, r.params["count"], r.enabled) for r in MonitorRule.objects.all()} == {
        (items.pk, 100, True),
        (own.pk, 0, True),
    }
    assert len(monitor_audit()) == 2  # the two made above, without an actor


def test_anonymous_users_are_sent_to_log_in_and_deletes_are_posts_only(
    client, operator_client, task, task_project
):
    rule = default(task_project, "min_items", {"count": 1})
    assert (
        operator_client.get(f"/projects/{task_project.pk}/monitors/{rule.pk}/delete/").status_code
        == 405
    )
    assert operator_client.get(f"/tasks/{task.pk}/monitors/{rule.pk}/off/").status_code == 405
    operator_client.logout()
    response = client.post(f"/tasks/{task.pk}/monitors/new/", {"kind": "min_items"})
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert MonitorRule.objects.count() == 1


def test_the_task_page_asks_the_same_queries_however_many_rules(
    operator_client, task, task_project
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert operator_client.get(f"/tasks/{task.pk}/").status_code == 200
        return len(captured)

    default(task_project, "min_items", {"count": 1})
    few = queries()
    for status in (403, 404, 429, 500, 503):
        default(task_project, "status_share", {"status": status, "percent": 5})
        services.save_rule(
            services.new_rule(task_project, task),
            {"kind": "status_share", "params": {"status": status, "percent": 1}},
        )
    assert queries() == few
