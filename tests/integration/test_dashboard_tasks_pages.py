"""The task list and a task's page in-process: what they show, what viewers may not do, the
actions (enable, disable, run now, delete), keyset paging, and queries that do not grow with
the number of tasks, runs or jobs.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.accounts.models import AuditEntry
from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.taskpages import FORM, make_task

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
State = TaskRun.State


def add_run(task: Task, state: str, ago: timedelta, *jobs: dict) -> TaskRun:
    """A run scheduled ``ago`` before now, with one job per ``jobs`` entry (its fields)."""
    at = timezone.now() - ago
    run = TaskRun.objects.create(
        task=task,
        trigger=TaskRun.Trigger.CRON,
        scheduled_for=at,
        state=state,
        finished_at=None if state == State.ACTIVE else at + timedelta(minutes=5),
    )
    for shard, fields in enumerate(jobs):
        Job.objects.create(
            run=run,
            shard=shard,
            project=task.project,
            spider=task.spider,
            version=task.project.current_version,
            **fields,
        )
    return run


def posts_on(page: str) -> list[str]:
    """The actions of the POST forms on a page, the logout form aside."""
    actions = re.findall(r'<form method="post" action="([^"]+)"', page)
    return [action for action in actions if action != "/logout/"]


def rows_of(page: str) -> list[str]:
    return re.findall(r'<tr data-task="([^"]+)"', page)


# --- the list ------------------------------------------------------------------------------
def test_the_list_shows_schedule_next_fire_last_run_and_success(operator_client, task_project):
    nightly = make_task(task_project, timezone="Europe/Paris")
    make_task(task_project, "hourly", cron="@hourly", enabled=False)
    shop = Project.objects.create(name="shop")
    make_task(shop, "other")
    for days in (1, 2, 3):
        add_run(nightly, State.SUCCEEDED, timedelta(days=days))
    add_run(nightly, State.FAILED, timedelta(days=4))
    add_run(nightly, State.MISSED, timedelta(days=5))  # not counted
    add_run(nightly, State.FAILED, timedelta(days=45))  # too old to count
    newest = add_run(nightly, State.SKIPPED, timedelta(hours=1))

    page = operator_client.get("/tasks/").content.decode()
    assert rows_of(page) == ["hourly", "nightly", "other"]
    row = page[page.index('data-task="nightly"') :].split("</tr>")[0]
    assert "0 3 * * *" in row
    assert "Europe/Paris" in row
    assert re.search(r"03:00 CES?T", row)  # the next fire on the task's clock
    assert f'href="/runs/{newest.pk}/"' in row
    assert "state-skipped" in row
    assert "75%" in row
    assert "of 4" in row
    assert "1 missed, 1 skipped" in row
    hourly = page[page.index('data-task="hourly"') :].split("</tr>")[0]
    assert "disabled" in hourly
    assert "no run yet" in hourly

    assert rows_of(operator_client.get("/tasks/?project=shop").content.decode()) == ["other"]
    assert rows_of(operator_client.get("/tasks/?enabled=no").content.decode()) == ["hourly"]
    both = operator_client.get("/tasks/?project=crawler&enabled=yes").content.decode()
    assert rows_of(both) == ["nightly"]
    assert (
        "No task matches these filters."
        in operator_client.get("/tasks/?project=x").content.decode()
    )


def test_the_list_pages_by_name_with_the_same_queries_however_many_tasks(
    operator_client, task_project
):
    def queries_for(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert operator_client.get(url).status_code == 200
        return len(captured)

    for index in range(3):
        add_run(make_task(task_project, f"task-{index:03}"), State.SUCCEEDED, timedelta(hours=1))
    few = queries_for("/tasks/")
    Task.objects.bulk_create(
        Task(name=f"task-{index:03}", project=task_project, spider="books", cron="0 * * * *")
        for index in range(3, 70)
    )
    for task in Task.objects.filter(name__in=["task-040", "task-060"]):
        add_run(task, State.FAILED, timedelta(hours=2), {"items": 1})
    assert queries_for("/tasks/") == few

    page = operator_client.get("/tasks/").content.decode()
    names = rows_of(page)
    assert len(names) == 50
    assert names[0] == "task-000"
    assert names[-1] == "task-049"
    older = re.search(r'href="\?([^"]+)" rel="next"', page).group(1)
    rest = rows_of(operator_client.get(f"/tasks/?{older.replace('&amp;', '&')}").content.decode())
    assert rest == [f"task-{index:03}" for index in range(50, 70)]


# --- permissions ---------------------------------------------------------------------------
def test_viewers_see_everything_and_may_change_nothing(viewer_client, task_project):
    task = make_task(task_project)
    run = add_run(task, State.ACTIVE, timedelta(minutes=1), {"state": Job.State.RUNNING})
    for url in ("/tasks/", f"/tasks/{task.pk}/"):
        page = viewer_client.get(url).content.decode()
        assert "nightly" in page
        assert posts_on(page) == []
        assert "/edit/" not in page
        assert "New task" not in page
    assert f"/runs/{run.pk}/" in page
    for url in ("/tasks/new/", f"/tasks/{task.pk}/edit/", f"/tasks/{task.pk}/delete/"):
        assert viewer_client.get(url).status_code == 403, url
    forged = {
        "/tasks/new/": {**FORM, "name": "forged"},
        f"/tasks/{task.pk}/edit/": {**FORM, "cron": "* * * * *"},
        f"/tasks/{task.pk}/enabled/": {"enabled": "0"},
        f"/tasks/{task.pk}/run/": {},
        f"/tasks/{task.pk}/delete/": {},
    }
    for url, data in forged.items():
        assert viewer_client.post(url, data).status_code == 403, url
    assert list(Task.objects.values_list("name", "cron", "enabled")) == [
        ("nightly", "0 3 * * *", True)
    ]
    assert TaskRun.objects.count() == 1
    assert not AuditEntry.objects.filter(action__startswith="task.").exists()


def test_anonymous_users_are_sent_to_log_in_and_actions_are_posts(
    client, operator_client, task_project
):
    task = make_task(task_project)
    assert operator_client.get(f"/tasks/{task.pk}/run/").status_code == 405
    assert operator_client.get(f"/tasks/{task.pk}/enabled/").status_code == 405
    assert not TaskRun.objects.exists()
    client.logout()
    for url in (f"/tasks/{task.pk}/", "/tasks/new/", f"/tasks/{task.pk}/run/"):
        response = client.post(url) if url.endswith("run/") else client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    assert not TaskRun.objects.exists()


# --- actions -------------------------------------------------------------------------------
def test_enable_and_disable_from_the_list_keep_its_filters(operator_client, task_project):
    task = make_task(task_project)
    response = operator_client.post(
        f"/tasks/{task.pk}/enabled/", {"enabled": "0", "next": "/tasks/?enabled=yes"}
    )
    assert response["Location"] == "/tasks/?enabled=yes"
    assert not Task.objects.get().enabled
    page = operator_client.get(response["Location"]).content.decode()
    assert "Task nightly disabled." in page
    response = operator_client.post(
        f"/tasks/{task.pk}/enabled/", {"enabled": "1", "next": "https://elsewhere.example/"}
    )
    assert response["Location"] == f"/tasks/{task.pk}/"  # never off the site
    assert Task.objects.get().enabled
    changes = [e.detail["changes"] for e in AuditEntry.objects.filter(action="task.update")]
    assert sorted(map(json.dumps, changes)) == sorted(
        json.dumps({"enabled": pair}) for pair in ([True, False], [False, True])
    )


def test_run_now_says_what_became_of_the_run(operator_client, task_project):
    task = make_task(task_project)
    response = operator_client.post(f"/tasks/{task.pk}/run/")
    run = TaskRun.objects.get()
    assert (run.trigger, run.state, run.jobs.count()) == ("manual", "active", 1)
    page = operator_client.get(response["Location"]).content.decode()
    assert f"Run #{run.pk} of nightly started: 1 job queued." in page
    assert f'data-run="{run.pk}"' in page
    audit = AuditEntry.objects.get(action="task.run_now")
    assert audit.detail == {"run": run.pk, "state": "active"}

    # The first run is still going and the overlap policy is skip.
    response = operator_client.post(f"/tasks/{task.pk}/run/", {"next": "/tasks/"})
    skipped = TaskRun.objects.exclude(pk=run.pk).get()
    assert skipped.state == State.SKIPPED
    page = operator_client.get(response["Location"]).content.decode()
    assert f"Run #{skipped.pk} of nightly was recorded as skipped: the previous run" in page
    assert 'class="warning"' in page

    empty = Project.objects.create(name="empty")
    bare = make_task(empty, "bare")
    response = operator_client.post(f"/tasks/{bare.pk}/run/")
    page = operator_client.get(response["Location"]).content.decode()
    assert "failed at once: project &#x27;empty&#x27; has no deployed version" in page


def test_delete_asks_first_and_is_refused_while_jobs_are_active(operator_client, task_project):
    task = make_task(task_project)
    add_run(task, State.SUCCEEDED, timedelta(days=1), {"state": Job.State.SUCCEEDED})
    active = add_run(task, State.ACTIVE, timedelta(minutes=1), {"state": Job.State.RUNNING})
    confirm = operator_client.get(f"/tasks/{task.pk}/delete/").content.decode()
    assert "its 2 runs" in confirm
    assert "1 job of this task is still active" in confirm

    response = operator_client.post(f"/tasks/{task.pk}/delete/")
    assert response["Location"] == f"/tasks/{task.pk}/"
    assert "has active jobs" in operator_client.get(response["Location"]).content.decode()
    assert Task.objects.exists()

    active.jobs.update(state=Job.State.CANCELLED)
    response = operator_client.post(f"/tasks/{task.pk}/delete/")
    assert response["Location"] == "/tasks/"
    assert not Task.objects.exists()
    assert not TaskRun.objects.exists()
    entry = AuditEntry.objects.get(action="task.delete")
    assert entry.detail["fields"]["cron"] == "0 3 * * *"
    assert "Task nightly deleted" in operator_client.get("/tasks/").content.decode()


# --- a task's page -------------------------------------------------------------------------
def test_the_task_page_shows_fires_success_chart_and_summed_runs(operator_client, task_project):
    task = make_task(task_project, cron="30 9 * * *", timezone="Asia/Tokyo")
    start = timezone.now() - timedelta(days=1, minutes=10)
    run = add_run(
        task,
        State.SUCCEEDED,
        timedelta(days=1),
        {"state": "failed", "items": 10, "pages": 12, "started_at": start},
        {"state": "succeeded", "items": 5, "pages": 4, "finished_at": start + timedelta(minutes=3)},
    )
    add_run(task, State.FAILED, timedelta(days=2), {"state": "failed"})
    page = operator_client.get(f"/tasks/{task.pk}/").content.decode()
    fires = page[page.index('id="cron-preview"') :].split("</table>")[0]
    assert fires.count("09:30 JST") == 5
    assert fires.count("00:30 UTC") == 5
    assert "50%" in page  # one of two
    row = page[page.index(f'data-run="{run.pk}"') :].split("</tr>")[0]
    assert f'href="/runs/{run.pk}/"' in row
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["2", "15 min", "15", "16"]
    chart = json.loads(re.search(r'data-chart="([^"]+)"', page).group(1).replace("&quot;", '"'))
    totals = {d["label"]: sum(d["data"]) for d in chart["datasets"]}
    assert totals == {"succeeded": 1, "failed": 1}
    assert len(chart["labels"]) == 30
    assert set(posts_on(page)) == {
        f"/tasks/{task.pk}/enabled/",
        f"/tasks/{task.pk}/run/",
        f"/tasks/{task.pk}/monitors/new/",  # the Monitors card's add form
    }


def test_the_run_history_pages_by_keyset_with_the_same_queries(operator_client, task_project):
    task = make_task(task_project)

    def queries_for(url: str) -> tuple[int, str]:
        with CaptureQueriesContext(connection) as captured:
            response = operator_client.get(url)
        return len(captured), response.content.decode()

    add_run(task, State.SUCCEEDED, timedelta(hours=1), {"items": 1})
    few, _ = queries_for(f"/tasks/{task.pk}/")
    for hours in range(2, 62):
        add_run(task, State.SUCCEEDED, timedelta(hours=hours), {"items": 1}, {"items": 2})
    many, page = queries_for(f"/tasks/{task.pk}/")
    assert many == few
    shown = re.findall(r'data-run="(\d+)"', page)
    assert len(shown) == 50
    older = re.search(r'href="\?([^"]+)" rel="next"', page).group(1).replace("&amp;", "&")
    rest = re.findall(
        r'data-run="(\d+)"', operator_client.get(f"/tasks/{task.pk}/?{older}").content.decode()
    )
    assert len(rest) == 11
    assert not set(rest) & set(shown)


def test_the_history_refreshes_itself_while_a_run_is_active(operator_client, task_project):
    task = make_task(task_project)
    add_run(task, State.SUCCEEDED, timedelta(hours=2))
    assert "hx-trigger" not in operator_client.get(f"/tasks/{task.pk}/?part=runs").content.decode()
    add_run(task, State.ACTIVE, timedelta(minutes=1), {"state": Job.State.QUEUED})
    fragment = operator_client.get(f"/tasks/{task.pk}/?part=runs", HTTP_HX_REQUEST="true")
    text = fragment.content.decode()
    assert text.startswith('<div id="task-runs" hx-get=')
    assert 'hx-trigger="every 3s"' in text
    assert "<html" not in text
    assert "state-running" in text  # an active run looks like a running job
