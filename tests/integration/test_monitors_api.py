"""Monitor rules over the REST API: defaults and overrides, roles, audit, and refused input."""

from __future__ import annotations

import pytest

from controlplane.accounts.models import AuditEntry
from controlplane.monitors.models import MonitorRule
from controlplane.scheduling.models import Task
from tests.fixtures.api import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(project) -> Task:
    return Task.objects.create(name="nightly", project=project, spider="books", cron="0 3 * * *")


def test_project_defaults_tasks_override_them_and_a_disabled_rule_switches_one_off(
    operator, viewer, task
):
    made = operator.post(
        "/monitors",
        {"project": "crawler", "kind": "min_items", "params": {"count": 100}, "outcome": "failed"},
    )
    assert made.status_code == 201, made.content
    default = made.json()
    assert default["scope"] == "project"
    assert default["description"] == "at least 100 items"
    share = operator.post(
        "/monitors",
        {"project": "crawler", "kind": "status_share", "params": {"status": 403, "percent": 10}},
    ).json()
    own = operator.post(
        "/monitors",
        {"project": "crawler", "task": "nightly", "kind": "min_items", "params": {"count": 5}},
    )
    assert own.status_code == 201, own.content
    assert own.json()["outcome"] == "degraded"  # the default outcome

    effective = viewer.get("/monitors/effective?task=nightly").json()
    assert {(r["kind"], r["scope"], r["params"].get("count")) for r in effective} == {
        ("min_items", "task", 5),
        ("status_share", "project", None),
    }
    # The task switches the 403 default off with a disabled rule of the same kind and target.
    off = operator.post(
        "/monitors",
        {
            "project": "crawler",
            "task": "nightly",
            "kind": "status_share",
            "params": {"status": 403, "percent": 50},
            "enabled": False,
        },
    )
    assert off.status_code == 201
    assert [r["kind"] for r in viewer.get("/monitors/effective?task=nightly").json()] == [
        "min_items"
    ]
    # A 429 rule is another target: it does not clash with the 403 one.
    assert (
        operator.post(
            "/monitors",
            {"project": "crawler", "kind": "status_share", "params": {"status": 429, "percent": 5}},
        ).status_code
        == 201
    )

    changed = operator.patch(f"/monitors/{share['id']}", {"params": {"status": 403, "percent": 20}})
    assert changed.status_code == 200, changed.content
    assert changed.json()["params"] == {"status": 403, "percent": 20.0}
    assert operator.delete(f"/monitors/{default['id']}").status_code == 204
    actions = list(AuditEntry.objects.order_by("pk").values_list("action", flat=True))
    assert actions.count("monitor.create") == 5
    assert "monitor.update" in actions
    assert "monitor.delete" in actions
    update = AuditEntry.objects.get(action="monitor.update")
    assert update.detail["changes"]["params"][1] == {"status": 403, "percent": 20.0}

    assert {k["kind"] for k in viewer.get("/monitors/kinds").json()} >= {"history", "stall"}
    assert len(viewer.get("/monitors?task=nightly").json()) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "status_share", "params": {"status": 403, "percent": -5}}, "params.percent"),
        ({"kind": "status_share", "params": {"status": 499, "percent": 5}}, "params.status"),
        ({"kind": "min_items", "params": {"count": 5, "colour": "red"}}, "params.colour"),
        ({"kind": "field_coverage", "params": {"field": "a b", "percent": 5}}, "params.field"),
        ({"kind": "history", "params": {"percent": 150}}, "params.percent"),
        ({"kind": "no_such_kind", "params": {}}, "kind"),
    ],
)
def test_a_malformed_rule_is_refused_by_field_and_nothing_is_stored(operator, task, body, field):
    answer = operator.post("/monitors", {"project": "crawler", "task": "nightly", **body})
    error = assert_error(answer, 422)
    assert field in error["fields"], error
    assert not MonitorRule.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="monitor.").exists()


def test_other_refusals(operator, viewer, task, project):
    body = {"project": "crawler", "kind": "min_pages", "params": {"count": 1}}
    assert_error(viewer.post("/monitors", body), 403)
    assert_error(operator.post("/monitors", {**body, "project": "nope"}), 404)
    assert_error(operator.post("/monitors", {**body, "task": "nope"}), 404)
    assert_error(operator.post("/monitors", {**body, "outcome": "explode"}), 422)
    assert_error(operator.post("/monitors", {**body, "colour": "red"}), 422)
    assert operator.post("/monitors", body).status_code == 201
    clash = assert_error(operator.post("/monitors", body), 409, "conflict")
    assert "already has a min_pages rule" in clash["message"]
    rule = MonitorRule.objects.get()
    kind_change = assert_error(operator.patch(f"/monitors/{rule.pk}", {"kind": "min_items"}), 422)
    assert kind_change  # the patch schema has no kind: an unknown field
    bad = assert_error(operator.patch(f"/monitors/{rule.pk}", {"params": {"count": -3}}), 422)
    assert "params.count" in bad["fields"]
    rule.refresh_from_db()
    assert rule.params == {"count": 1}
    assert_error(operator.delete("/monitors/999999"), 404)
