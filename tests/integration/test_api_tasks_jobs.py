"""The REST API's tasks, jobs and spider reports, through Django's test client in-process.

Auth, roles, nodes, projects and the wire are in test_api.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from controlplane.deploys.models import Project
from controlplane.jobs.models import Job
from controlplane.scheduling.models import Task
from tests.fixtures.api import assert_error
from tests.fixtures.jobs import create_adhoc_run

# --- tasks ----------------------------------------------------------------------------------
TASK = {"name": "nightly", "project": "crawler", "spider": "books", "cron": "0 3 * * *"}


@pytest.mark.django_db
def test_task_validation_reports_every_field(operator, project):
    response = operator.post(
        "/tasks",
        {
            **TASK,
            "cron": "61 * * *",
            "timezone": "Mars/Olympus",
            "spider": "nosuch",
            "args": {"_version": "1", "ok": ["a", "list"]},
            "max_attempts": 0,
        },
    )
    error = assert_error(response, 422, "invalid")
    fields = error["fields"]
    assert "4 fields" in " ".join(fields["cron"])
    assert "unknown spider 'nosuch'" in " ".join(fields["spider"])
    assert "args" in fields
    assert "max_attempts" in fields
    assert not Task.objects.exists()

    tz = assert_error(operator.post("/tasks", {**TASK, "timezone": "Mars/Olympus"}), 422)
    assert "unknown timezone" in tz["fields"]["timezone"][0]
    bad_cron = assert_error(operator.post("/tasks", {**TASK, "cron": "0 25 * * *"}), 422)
    assert "cron" in bad_cron["fields"]
    bad_args = assert_error(operator.post("/tasks", {**TASK, "args": {"a b": "1"}}), 422)
    assert "not a valid name" in bad_args["fields"]["args"][0]
    unknown = assert_error(
        operator.post("/tasks", {**TASK, "project": "nope", "version": "1"}), 422
    )
    assert "unknown project" in unknown["fields"]["project"][0]
    missing = assert_error(operator.post("/tasks", {"name": "x"}), 422)
    assert {"project", "spider"} <= set(missing["fields"])
    no_cron = {key: value for key, value in TASK.items() if key != "cron"}
    unscheduled = assert_error(operator.post("/tasks", no_cron), 422)
    assert "unless the task runs after another task" in unscheduled["fields"]["cron"][0]
    nodes = assert_error(operator.post("/tasks", {**TASK, "selector": "nodes"}), 422)
    assert "selector_nodes" in nodes["fields"]


@pytest.mark.django_db
def test_task_crud_preview_and_manual_run(operator, viewer, project):
    created = operator.post(
        "/tasks",
        {**TASK, "cron": "30 9 * * 1-5", "timezone": "Europe/Paris", "args": {"max_pages": 2}},
    )
    assert created.status_code == 201, created.content
    task = created.json()
    assert task["version"] is None
    assert task["next_run"] is not None
    assert_error(operator.post("/tasks", TASK), 409)

    preview = viewer.get(f"/tasks/{task['id']}/preview?count=5").json()
    assert len(preview["next_runs"]) == 5
    assert preview["next_runs"] == sorted(preview["next_runs"])
    assert all(run.endswith(("T09:30:00+01:00", "T09:30:00+02:00")) for run in preview["next_runs"])
    assert viewer.get("/cron/preview?cron=*/15 * * * * *&count=3").status_code == 200
    assert (
        "timezone"
        in assert_error(viewer.get("/cron/preview?cron=* * * * *&timezone=X/Y"), 422)["fields"]
    )

    pinned = operator.patch(f"/tasks/{task['id']}", {"version": "100", "enabled": False})
    assert pinned.json()["version"] == "100"
    assert pinned.json()["next_run"] is None
    assert (
        "version"
        in assert_error(operator.patch(f"/tasks/{task['id']}", {"version": "7"}), 422)["fields"]
    )
    assert_error(viewer.patch(f"/tasks/{task['id']}", {"enabled": True}), 403)

    run = operator.post(f"/tasks/{task['id']}/run")
    assert run.status_code == 201, run.content
    assert run.json()["trigger"] == "manual"
    [job_id] = run.json()["jobs"]
    job = Job.objects.get(pk=job_id)
    assert job.args == {"max_pages": 2}
    assert job.version.version == "100"

    assert_error(operator.delete(f"/tasks/{task['id']}"), 409)  # its job is active
    Job.objects.filter(pk=job_id).update(state=Job.State.SUCCEEDED)
    assert operator.delete(f"/tasks/{task['id']}").status_code == 204


# --- jobs -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_job_list_detail_cancel_retry(operator, viewer, project):
    queued = create_adhoc_run(project, "books")
    failed = create_adhoc_run(project, "books", args={"max_pages": "1"})
    Job.objects.filter(pk=failed.pk).update(
        state=Job.State.FAILED, reason="3 errors", stats={"log_count/ERROR": 3}, errors=3
    )

    listing = viewer.get("/jobs?state=failed").json()
    assert listing["count"] == 1
    assert listing["items"][0]["id"] == failed.pk
    assert viewer.get("/jobs?spider=books&limit=1").json()["count"] == 2
    assert viewer.get("/jobs?active=true").json()["items"][0]["id"] == queued.pk
    assert "state" in assert_error(viewer.get("/jobs?state=exploded"), 422)["fields"]

    detail = viewer.get(f"/jobs/{failed.pk}").json()
    assert detail["stats"] == {"log_count/ERROR": 3}
    assert detail["args"] == {"max_pages": "1"}
    assert "log_url" in detail

    cancelled = operator.post(f"/jobs/{queued.pk}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["job"]["state"] == "cancelled"
    assert_error(operator.post(f"/jobs/{queued.pk}/cancel"), 409)

    retried = operator.post(f"/jobs/{failed.pk}/retry")
    assert retried.status_code == 201, retried.content
    retry = retried.json()["retry"]
    assert retry["attempt"] == 2
    assert retry["state"] == "queued"
    assert retried.json()["job"]["retried_by"] == retry["id"]
    assert_error(operator.post(f"/jobs/{retry['id']}/retry"), 409)  # not ended yet


# --- spider reports ---------------------------------------------------------------------------
def _job_on_node(project: Project, state: str = Job.State.PENDING) -> tuple[Job, str]:
    job = create_adhoc_run(project, "books")
    secret = job.issue_report_token()
    job.state = state
    job.save()
    return job, secret


@pytest.mark.django_db
def test_report_events_and_stop_replies(project):
    job, secret = _job_on_node(project)
    spider = Client()
    url = f"/api/v1/report/{job.scrapyd_job_id}"

    def send(event: str, secret: str = secret, **body: Any):
        return spider.post(
            url,
            data=json.dumps({"event": event, **body}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )

    assert_error(send("started", secret="wrong"), 401)
    no_auth = spider.post(
        url, data=json.dumps({"event": "started"}), content_type="application/json"
    )
    assert_error(no_auth, 401)
    assert_error(spider.post(url, data="{}", content_type="application/json"), 401)  # auth first
    assert_error(
        spider.post(
            "/api/v1/report/unknown-job",
            data=json.dumps({"event": "started"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        ),
        401,
    )
    assert_error(send("exploded"), 422)

    assert send("started").json() == {"action": "continue", "reason": ""}
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING
    assert job.started_at is not None
    first_beat = job.last_heartbeat

    time.sleep(0.01)
    beat = send("heartbeat", stats={"item_scraped_count": 12, "response_received_count": 3})
    assert beat.json()["action"] == "continue"
    job.refresh_from_db()
    assert job.items == 12
    assert job.pages == 3
    assert job.last_heartbeat > first_beat

    Job.objects.filter(pk=job.pk).update(
        cancel_requested=True, reason="cancel requested by an operator"
    )
    stop = send("heartbeat", stats={}).json()
    assert stop["action"] == "stop"
    assert "cancel requested" in stop["reason"]

    final = {"item_scraped_count": 20, "log_count/ERROR": 1, "finish_reason": "shutdown"}
    send("finished", stats=final, finish_reason="stopped_by_controlplane")
    job.refresh_from_db()
    assert job.reported_final
    assert job.items == 20
    assert job.errors == 1
    assert job.finish_reason == "stopped_by_controlplane"
    assert job.state == Job.State.RUNNING  # the poller classifies the outcome
    # A heartbeat sent before the close but arriving after the final report changes nothing.
    late = send("heartbeat", stats={"item_scraped_count": 6, "response_received_count": 7})
    assert late.status_code == 200
    job.refresh_from_db()
    assert (job.items, job.pages, job.stats["finish_reason"]) == (20, 0, "shutdown")

    # A live orphan of a job declared lost is told to stop, so it never runs beside its retry.
    orphan, orphan_secret = _job_on_node(project, Job.State.LOST)
    reply = spider.post(
        f"/api/v1/report/{orphan.scrapyd_job_id}",
        data=json.dumps({"event": "heartbeat", "stats": {}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {orphan_secret}",
    ).json()
    assert reply["action"] == "stop"
    assert "lost" in reply["reason"]
    # ...and a report cannot revive a job that has ended.
    orphan.refresh_from_db()
    assert orphan.state == Job.State.LOST
