"""The monitors' verdict on the job page (each breach with its sentence and outcome, the rules
not evaluated and why, the rules that held, the cause), and degraded jobs and runs in the lists'
state filters and on the run page. In-process.
"""

from __future__ import annotations

import re

import pytest

from controlplane.jobs.models import Job
from controlplane.scheduling.models import TaskRun
from tests.fixtures.dashboard import logged_in_client
from tests.fixtures.joblists import World

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

REPORT = {
    "breaches": [
        {
            "rule": 7,
            "kind": "status_share",
            "scope": "project",
            "outcome": "degraded",
            "rule_text": "HTTP 403 on at most 10% of responses",
            "message": "HTTP 403 on 30 of 100 responses (30%), above 10%",
            "figures": {"status": 403, "count": 30, "responses": 100, "percent": 30.0},
        }
    ],
    "not_evaluated": [
        {
            "rule": 8,
            "rule_text": "field 'price' filled in at least 90%",
            "why": "the crawl sent no field counts (no crawlfleet coverage pipeline)",
        }
    ],
    "held": [{"rule": 9, "rule_text": "at least 10 items"}],
}


@pytest.fixture
def world(db) -> World:
    return World.build()


def test_the_job_page_shows_the_monitors_verdict_and_the_lists_filter_degraded(
    client, dashboard_users, world
):
    viewer = logged_in_client(client, dashboard_users["viewer"])
    reason = "broke a monitor: HTTP 403 on 30 of 100 responses (30%), above 10%"
    run, (job,) = world.run(
        "books-daily",
        Job.State.DEGRADED,
        run_state=TaskRun.State.DEGRADED,
        reason=reason,
        cause="monitor",
        monitor_report=REPORT,
    )
    TaskRun.objects.filter(pk=run.pk).update(reason=f"shard 0: {reason}")
    _, (plain,) = world.run("books-daily", Job.State.SUCCEEDED, cause="finished")

    page = viewer.get(f"/jobs/{job.pk}/").content.decode()
    section = page[page.index('id="job-monitors"') :]
    text = " ".join(re.sub(r"<[^>]+>", " ", section.split("</section>")[0]).split())
    assert "Broken (1) degraded HTTP 403 on 30 of 100 responses (30%), above 10%" in text
    assert (
        "the rule: HTTP 403 on at most 10% of responses · a project default · status_share" in text
    )
    assert (
        "Not evaluated (1) not evaluated field &#x27;price&#x27; filled in at least 90% "
        "the crawl sent no field counts (no crawlfleet coverage pipeline)" in text
    )
    assert "Held (1) held at least 10 items" in text
    assert re.search(r'<th scope="row">Cause</th><td class="mono">monitor</td>', page)
    assert 'class="badge state-degraded"' in page

    page = viewer.get(f"/jobs/{plain.pk}/").content.decode()
    assert "No monitor rule judged this job." in page
    assert '<td class="mono">finished</td>' in page

    jobs = viewer.get("/jobs/?state=degraded").content.decode()
    assert f'href="/jobs/{job.pk}/"' in jobs
    assert f'href="/jobs/{plain.pk}/"' not in jobs
    assert 'value="degraded"' in jobs
    runs = viewer.get("/runs/?state=degraded").content.decode()
    assert f'href="/runs/{run.pk}/"' in runs
    assert 'value="degraded"' in runs
    page = viewer.get(f"/runs/{run.pk}/").content.decode()
    assert f"shard 0: {reason}" in page
    assert 'class="badge state-degraded"' in page
