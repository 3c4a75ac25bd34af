"""The job list and job page in Chromium, against a real ``crawlfleet web``, real Scrapyd nodes
(the failproject spiders) and real scheduler and poller processes: a job followed live from
queued to succeeded with its log, stats and chart; the list's active rows kept current; a long
job cancelled and a failed one retried from their pages. Nothing is loaded from elsewhere.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from controlplane.accounts.models import AuditEntry
from controlplane.jobs.models import Job
from tests.fixtures.browser import confine
from tests.fixtures.common import wait_until
from tests.fixtures.dashboard import log_in, screenshot
from tests.fixtures.fleet import job_state, make_task, start_run

pytestmark = [pytest.mark.browser, pytest.mark.scrapyd]

# The failproject has no report extension of its own; this turns the crawler's on (the rest of
# the project's EXTENSIONS are kept off as in its settings), so the spider heartbeats.
REPORTING = {
    "EXTENSIONS": json.dumps(
        {
            "scrapy.extensions.telnet.TelnetConsole": None,
            "scrapy.extensions.remote_control.RemoteControl": None,
            "crawler.extensions.report.OutcomeReporter": 500,
        }
    )
}
WATCH_STATES = """() => {
    const now = () => document.querySelector('#job-live')?.dataset.state;
    window.notReloaded = true;
    window.seenStates = [now()];
    new MutationObserver(() => {
        const state = now();
        if (state && window.seenStates[window.seenStates.length - 1] !== state) {
            window.seenStates.push(state);
        }
    }).observe(document.body, {childList: true, subtree: true});
}"""


def job_state_on_page(page, state: str, timeout: float = 60_000) -> None:
    page.wait_for_selector(f'#job-live[data-state="{state}"]', timeout=timeout)


def test_a_job_is_followed_live_from_queued_to_succeeded(
    fleet, cp_web, cp_process, page, dashboard_users
):
    blocked = confine(page, cp_web)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    cp_process("poller")
    task = make_task(
        fleet, "ok", args={"count": "12"}, settings={**REPORTING, "DOWNLOAD_DELAY": "0.4"}
    )
    job = start_run(task).jobs.get()
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/jobs/{job.pk}/")
    job_state_on_page(page, "queued")
    assert page.locator("#job-live h1 .badge").inner_text() == "queued"
    page.evaluate(WATCH_STATES)

    cp_process("scheduler")  # only now is the job dispatched
    job_state_on_page(page, "succeeded", timeout=90_000)
    assert page.evaluate("window.notReloaded") is True
    seen = page.evaluate("window.seenStates")
    assert seen[0] == "queued"
    assert seen[-1] == "succeeded"
    order = ["queued", "dispatching", "pending", "running", "succeeded"]
    assert seen == sorted(seen, key=order.index), seen
    assert "running" in seen

    # The log came through the control plane, up to its end.
    page.locator("#log-status").filter(has_text="this is the end of its log").wait_for()
    log = page.inner_text("#job-log")
    assert "[scrapy.core.engine] INFO: Spider opened" in log
    assert "Spider closed (finished)" in log
    assert "Dumping Scrapy stats" in log
    assert page.locator("#log-next").count() == 0  # polling stopped
    job.refresh_from_db()
    node = fleet.process(job.node_id)
    assert node.job_log("failproject", "ok", job.scrapyd_job_id).endswith(log.rstrip("\n") + "\n")

    stats = page.locator("#job-stats")
    stats.filter(has_text="item_scraped_count").wait_for()
    assert stats.locator("tr", has_text="item_scraped_count").locator("td").inner_text() == "12"
    assert "response_status_count/200" in stats.inner_text()
    assert page.locator(".tile-label:text-is('Items') + .tile-value").inner_text() == "12"

    points = page.evaluate(
        """() => {
            const chart = Chart.getChart(document.querySelector('#job-live canvas[data-chart]'));
            return chart ? chart.data.datasets[0].data.map(p => p.y) : null;
        }"""
    )
    assert points is not None
    assert len(points) >= 3  # started, at least one heartbeat, finished
    assert points == sorted(points)
    assert points[-1] == 12
    screenshot(page, "jobs-job-succeeded")

    page.goto(f"{cp_web}/jobs/?node={job.node.name}")
    row = page.locator(f"#job-row-{job.pk}")
    assert "succeeded" in row.inner_text()
    screenshot(page, "jobs-list-by-node")
    assert blocked == [], blocked
    assert errors == []


def test_a_long_job_is_cancelled_from_its_page(fleet, cp_web, cp_process, page, dashboard_users):
    blocked = confine(page, cp_web)
    cp_process("poller")
    task = make_task(fleet, "sleepy", args={"seconds": "300"}, max_attempts=1)
    job = start_run(task).jobs.get()
    log_in(page, cp_web, dashboard_users["operator"])
    # The job list keeps its active rows current.
    page.goto(f"{cp_web}/jobs/?task={task.name}")
    row = page.locator(f"#job-row-{job.pk}")
    assert "queued" in row.inner_text()
    page.evaluate("window.notReloaded = true")
    cp_process("scheduler")
    page.wait_for_selector(f"#job-row-{job.pk} .badge.state-running", timeout=60_000)
    assert page.evaluate("window.notReloaded") is True
    assert row.locator("td").nth(3).inner_text() in {r.name for r in fleet.rows}  # its node
    screenshot(page, "jobs-list-live")

    row.get_by_role("link", name=str(job.pk), exact=True).click()
    page.wait_for_url(f"{cp_web}/jobs/{job.pk}/")
    job_state_on_page(page, "running")
    page.locator("#job-log").filter(has_text="Spider opened").wait_for()

    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_url(f"{cp_web}/jobs/{job.pk}/")
    message = page.locator(".messages li.success").inner_text()
    assert message.startswith(f"Job {job.pk}: ")
    assert "stopping on" in message or "cancelled" in message, message
    job_state_on_page(page, "cancelled")
    assert page.get_by_role("button", name="Cancel job").count() == 0
    assert page.get_by_role("button", name="Retry now").count() == 1  # cancelled jobs may retry
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    entry = AuditEntry.objects.get(action="job.cancel")
    assert (entry.actor, entry.target) == (dashboard_users["operator"].username, f"job {job.pk}")
    screenshot(page, "jobs-job-cancelled")
    assert blocked == [], blocked


def test_a_failed_job_is_retried_from_its_page(fleet, cp_web, cp_process, page, dashboard_users):
    blocked = confine(page, cp_web)
    cp_process("scheduler")
    cp_process("poller")
    task = make_task(fleet, "callback_error", max_attempts=1)
    job = start_run(task).jobs.get()
    wait_until(job_state(job, *Job.FINAL), 60, "the first attempt to end")
    assert job.state == Job.State.FAILED, job.reason
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/jobs/{job.pk}/")
    assert page.locator("#job-live").get_attribute("data-state") == "failed"
    assert page.get_by_role("button", name="Cancel job").count() == 0

    page.get_by_role("button", name="Retry now").click()
    page.wait_for_url(re.compile(rf"{cp_web}/jobs/(?!{job.pk}/)\d+/"))
    retry = Job.objects.get(retry_of=job)
    assert page.url == f"{cp_web}/jobs/{retry.pk}/"
    assert f"retried as job {retry.pk} (attempt 2)" in page.locator(".messages").inner_text()
    attempts = page.locator("table.attempts tbody tr")
    assert attempts.count() == 2
    assert "failed" in attempts.nth(0).inner_text()
    job_state_on_page(page, "failed")  # the retry runs and fails the same way, live
    # The log panel follows the state on its own request: wait for it rather than read it once.
    expect(page.locator("#job-log")).to_contain_text(
        "callback_error: deliberate failure", timeout=30_000
    )
    entry = AuditEntry.objects.get(action="job.retry")
    assert entry.target == f"job {job.pk}"
    assert entry.detail == {"retry": retry.pk}
    screenshot(page, "jobs-job-retried")

    page.goto(f"{cp_web}/jobs/?task={task.name}")
    assert page.locator("tbody tr[id^=job-row-]").count() == 2
    screenshot(page, "jobs-list-by-task")
    assert blocked == [], blocked
