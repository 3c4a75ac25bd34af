"""Chains without nodes: what saving a chain refuses (REST API and dashboard alike), the pages
that show chains, and the completion hook on rows (a fan-out upstream starts its downstream
once, when its last shard ends; a replay starts nothing).

The same chains on real nodes, scheduler and pollers are in test_chains.py.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.accounts.models import AuditEntry
from controlplane.jobs import chains, completion
from controlplane.jobs.models import Job
from controlplane.jobs.runs import create_run
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.api import assert_error
from tests.fixtures.taskpages import FORM

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def task(project, name: str, **fields) -> Task:
    fields.setdefault("cron", "0 3 * * *")
    return Task.objects.create(project=project, name=name, spider="books", **fields)


def snapshot(*tasks: Task) -> list[tuple]:
    return list(
        Task.objects.filter(pk__in=[t.pk for t in tasks])
        .order_by("pk")
        .values_list("name", "cron", "after_task_id", "after_condition", "pass_upstream")
    )


# --- refusals over the REST API ---------------------------------------------------------------
def test_the_api_refuses_loops_self_chains_and_unknown_upstreams_saving_nothing(operator, project):
    a = task(project, "a")
    b = task(project, "b", after_task=a)
    before = snapshot(a, b)
    audited = AuditEntry.objects.count()

    loop = assert_error(operator.patch(f"/tasks/{a.pk}", {"after_task": "b"}), 422, "invalid")
    assert loop["fields"]["after_task"] == ["would make a loop: a → b → a"]
    itself = assert_error(operator.patch(f"/tasks/{a.pk}", {"after_task": "a"}), 422)
    assert itself["fields"]["after_task"] == ["a task cannot run after itself"]
    unknown = assert_error(operator.patch(f"/tasks/{b.pk}", {"after_task": "nope"}), 422)
    assert unknown["fields"]["after_task"] == ["unknown task 'nope'"]
    created = assert_error(
        operator.post(
            "/tasks", {"name": "c", "project": "crawler", "spider": "books", "after_task": "nope"}
        ),
        422,
    )
    assert created["fields"]["after_task"] == ["unknown task 'nope'"]
    assert "cron" in created["fields"]  # no schedule and no upstream: it would never run
    condition = assert_error(
        operator.patch(f"/tasks/{b.pk}", {"after_condition": "sometimes"}), 422
    )
    assert "after_condition" in condition["fields"]
    taken = assert_error(
        operator.patch(f"/tasks/{b.pk}", {"pass_upstream": True, "args": {"upstream_run": "1"}}),
        422,
    )
    assert "upstream_run are set by the upstream run" in taken["fields"]["args"][0]

    assert snapshot(a, b) == before
    assert not Task.objects.filter(name="c").exists()
    assert AuditEntry.objects.count() == audited


def test_a_longer_loop_is_named_and_fan_out_of_chains_is_fine(operator, project):
    a = task(project, "a")
    b = task(project, "b", after_task=a)
    c = task(project, "c", after_task=b)
    loop = assert_error(operator.patch(f"/tasks/{a.pk}", {"after_task": "c"}), 422)
    assert loop["fields"]["after_task"] == ["would make a loop: a → c → b → a"]
    sibling = operator.post(
        "/tasks",
        {
            "name": "d",
            "project": "crawler",
            "spider": "books",
            "cron": "",
            "after_task": "a",
            "after_condition": "always",
            "pass_upstream": True,
        },
    )
    assert sibling.status_code == 201, sibling.content
    body = sibling.json()
    assert (body["cron"], body["after_task"], body["after_condition"]) == ("", "a", "always")
    assert body["pass_upstream"] is True
    assert body["next_run"] is None
    upstream = operator.get(f"/tasks/{a.pk}").json()
    assert upstream["downstream_tasks"] == ["b", "d"]
    assert (
        AuditEntry.objects.get(action="task.create", target="d").detail["fields"]["after_task"]
        == "a"
    )
    # Deleting an upstream task is refused while tasks run after it.
    refused = assert_error(operator.delete(f"/tasks/{a.pk}"), 409)
    assert "b, d" in refused["message"]
    cleared = operator.patch(f"/tasks/{c.pk}", {"after_task": None})
    assert cleared.json()["after_task"] is None
    assert operator.delete(f"/tasks/{c.pk}").status_code == 204


# --- refusals in the dashboard form -----------------------------------------------------------
def chain_form(name: str, after: str, **fields: str) -> dict[str, str]:
    return {**FORM, "name": name, "after_task": after, "after_condition": "success", **fields}


def test_the_form_shows_loop_self_and_unknown_refusals_beside_the_field(
    operator_client, task_project
):
    a = task(task_project, "a")
    b = task(task_project, "b", cron="", after_task=a)
    before = snapshot(a, b)
    cases = [
        (f"/tasks/{a.pk}/edit/", chain_form("a", "b"), "would make a loop: a → b → a"),
        (f"/tasks/{a.pk}/edit/", chain_form("a", "a"), "a task cannot run after itself"),
        (f"/tasks/{b.pk}/edit/", chain_form("b", "ghost", cron=""), "unknown task 'ghost'"),
        ("/tasks/new/", chain_form("c", "ghost"), "unknown task 'ghost'"),
    ]
    for url, data, message in cases:
        response = operator_client.post(url, data)
        assert response.status_code == 422, (url, data)
        page = response.content.decode()
        assert f'id="after_task-error">{message}</div>'.replace("'", "&#x27;") in page, message
    assert snapshot(a, b) == before
    assert not Task.objects.filter(name="c").exists()


def test_the_form_saves_a_chained_only_task_and_the_pages_show_the_chain(
    operator_client, task_project
):
    a = task(task_project, "a")
    response = operator_client.post(
        "/tasks/new/",
        chain_form("b", "a", cron="", after_condition="always", pass_upstream="on"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    b = Task.objects.get(name="b")
    assert (b.cron, b.after_task, b.after_condition, b.pass_upstream) == ("", a, "always", True)
    edit = operator_client.get(f"/tasks/{b.pk}/edit/").content.decode()
    assert '<option value="a" selected>a</option>' in edit

    page = operator_client.get(f"/tasks/{b.pk}/").content.decode()
    assert "none of its own" in page
    assert f'<a href="/tasks/{a.pk}/">a</a> always' in page
    assert "its run passed as spider arguments" in page
    upstream = operator_client.get(f"/tasks/{a.pk}/").content.decode()
    assert f'<a href="/tasks/{b.pk}/">b</a>' in upstream.split('id="chain-downstream"')[1]
    listing = operator_client.get("/tasks/").content.decode()
    assert "after</span> a" in listing

    # A run page links its upstream run, and the upstream run page its chained runs.
    run_a = create_run(a, timezone.now(), TaskRun.Trigger.MANUAL)
    TaskRun.objects.filter(pk=run_a.pk).update(state=TaskRun.State.FAILED)
    run_a.refresh_from_db()
    [run_b] = chains.start_downstream(run_a)
    assert run_b.trigger == TaskRun.Trigger.CHAIN
    page_b = operator_client.get(reverse("dashboard:run", args=[run_b.pk])).content.decode()
    assert f'after <a href="/runs/{run_a.pk}/">run {run_a.pk}</a> of a' in page_b
    page_a = operator_client.get(reverse("dashboard:run", args=[run_a.pk])).content.decode()
    assert f'<a href="/runs/{run_b.pk}/">run {run_b.pk}</a> of b' in page_a


# --- the completion hook, on rows ---------------------------------------------------------------
def finish(run: TaskRun, *states: str, items: int = 0) -> None:
    for job, state in zip(run.jobs.order_by("shard"), states, strict=True):
        Job.objects.filter(pk=job.pk).update(state=state, items=items, pages=items + 1)


def test_a_fan_out_upstream_starts_its_downstream_once_when_every_shard_has_ended(project):
    a = task(project, "a", fanout=3, max_attempts=1)
    b = task(project, "b", cron="", after_task=a, pass_upstream=True)
    c = task(project, "c", cron="", after_task=a, after_condition=Task.AfterCondition.CLEAN)
    off = task(project, "off", cron="", after_task=a, enabled=False)
    run = create_run(a, timezone.now(), TaskRun.Trigger.MANUAL)
    assert run.jobs.count() == 3

    finish(run, Job.State.SUCCEEDED, Job.State.SUCCEEDED, Job.State.RUNNING, items=5)
    assert completion.sweep() == 0
    assert not TaskRun.objects.filter(trigger=TaskRun.Trigger.CHAIN).exists()

    finish(run, Job.State.SUCCEEDED, Job.State.SUCCEEDED, Job.State.DEGRADED, items=5)
    assert completion.sweep() == 1
    run.refresh_from_db()
    assert run.state == TaskRun.State.DEGRADED
    chained = TaskRun.objects.filter(trigger=TaskRun.Trigger.CHAIN)
    # "on success" counts a degraded run; "on clean success" does not; a disabled task never runs.
    [run_b] = chained
    assert (run_b.task, run_b.upstream_run) == (b, run)
    assert not c.runs.exists()
    assert not off.runs.exists()
    assert run_b.jobs.get().args == {
        "upstream_run": str(run.pk),
        "upstream_task": "a",
        "upstream_state": "degraded",
        "upstream_items": "15",
        "upstream_pages": "18",
        "upstream_errors": "0",
    }

    # Closed once: sweeping again, or replaying the hook, starts nothing more.
    assert completion.sweep() == 0
    assert completion.close_run(run, TaskRun.State.SUCCEEDED, "again") is False
    assert chains.start_downstream(run) == []
    assert create_run(b, timezone.now(), TaskRun.Trigger.CHAIN, upstream=run) is None
    assert chained.count() == 1


def test_chained_runs_follow_the_downstream_tasks_overlap_policy(project):
    a = task(project, "a")
    b = task(
        project,
        "b",
        cron="",
        after_task=a,
        overlap=Task.Overlap.SKIP,
        after_condition=Task.AfterCondition.ALWAYS,
    )
    busy = create_run(b, timezone.now(), TaskRun.Trigger.MANUAL)
    assert busy.state == TaskRun.State.ACTIVE
    run = create_run(a, timezone.now(), TaskRun.Trigger.MANUAL)
    finish(run, Job.State.CANCELLED)
    assert completion.sweep() == 1
    skipped = b.runs.get(trigger=TaskRun.Trigger.CHAIN)
    assert (skipped.state, skipped.upstream_run) == (TaskRun.State.SKIPPED, run)
    assert not skipped.jobs.exists()
