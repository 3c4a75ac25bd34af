"""The task pages in Chromium against a real `crawlfleet web`, with a real egg deployed to a real
Scrapyd node (so the project's version knows its spiders): an operator creates a task, watches
the cron preview follow the typing (an error included, nothing submitted), saves, runs it now and
finds the run in the history. Nothing is loaded from outside the control plane.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from controlplane.deploys.services import upload_version
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.browser import confine
from tests.fixtures.dashboard import log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.scrapyd]


def test_an_operator_creates_a_task_sees_its_fires_as_they_type_and_runs_it(
    cp_web, page, dashboard_users, shared_scrapyd_node, crawler_egg
):
    Node.objects.create(
        name=shared_scrapyd_node.name, url=shared_scrapyd_node.url, state=Node.State.UP
    )
    outcome = upload_version("crawler", crawler_egg.version, crawler_egg.data)
    assert outcome.ok, outcome.results
    assert "books" in outcome.version.spiders

    blocked = confine(page, cp_web)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/tasks/")
    page.get_by_role("link", name="New task").click()
    page.wait_for_url(f"{cp_web}/tasks/new/")

    page.fill("#id_name", "weekday-books")
    page.select_option("#id_project", "crawler")
    page.fill("#id_spider", "books")
    page.fill("#id_args", "category=travel")
    page.fill("#id_timezone", "Europe/Paris")
    preview = page.locator("#cron-preview")
    cron = page.locator("#id_cron")
    cron.fill("")
    cron.press_sequentially("30 6 * * 1-5")
    expect(preview.locator("tbody tr")).to_have_count(5)
    expect(preview).to_contain_text("30 6 * * 1-5")
    local_times = preview.locator("td:first-child").all_inner_texts()
    assert all(re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri) \S+ 06:30 CES?T", t) for t in local_times)
    assert all(
        re.search(r"0[45]:30 UTC$", t) for t in preview.locator("td.muted").all_inner_texts()
    )

    cron.fill("")
    cron.press_sequentially("61 * * * *")
    expect(preview.locator(".field-error")).to_contain_text("minute (0-59) field '61'")
    assert page.url == f"{cp_web}/tasks/new/"  # nothing was submitted
    assert not Task.objects.exists()
    screenshot(page, "tasks-form-cron-error")

    # An unknown spider is refused by the server, beside the field; the form keeps its input.
    page.fill("#id_spider", "nosuch")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#spider-error")).to_contain_text("unknown spider 'nosuch'")
    expect(page.locator("#cron-error")).to_contain_text("minute (0-59) field '61'")
    expect(page.locator("#id_args")).to_have_value("category=travel")
    assert not Task.objects.exists()
    screenshot(page, "tasks-form-refused")

    page.fill("#id_spider", "books")
    cron = page.locator("#id_cron")
    cron.fill("")
    cron.press_sequentially("30 6 * * 1-5")
    expect(page.locator("#cron-preview tbody tr")).to_have_count(5)
    screenshot(page, "tasks-form")
    page.get_by_role("button", name="Create task").click()
    page.wait_for_url(re.compile(r"/tasks/\d+/$"))
    expect(page.locator(".messages")).to_contain_text("Task weekday-books created.")
    task = Task.objects.get()
    assert page.url == f"{cp_web}/tasks/{task.pk}/"
    assert (task.spider, task.args, task.timezone) == (
        "books",
        {"category": "travel"},
        "Europe/Paris",
    )
    expect(page.locator("#cron-preview tbody tr")).to_have_count(5)
    expect(page.locator("#task-runs")).to_contain_text("No runs yet.")

    page.get_by_role("button", name="Run now").click()
    expect(page.locator(".messages")).to_contain_text("of weekday-books started: 1 job queued.")
    run = TaskRun.objects.get()
    expect(page.locator(".messages")).to_contain_text(f"Run #{run.pk} of weekday-books")
    history_row = page.locator(f'#task-runs tr[data-run="{run.pk}"]')
    expect(history_row).to_contain_text("manual")
    expect(history_row).to_contain_text("active")
    expect(history_row.get_by_role("link", name=f"#{run.pk}")).to_have_attribute(
        "href", f"/runs/{run.pk}/"
    )
    page.locator(".chart canvas").wait_for()
    screenshot(page, "tasks-detail")

    page.goto(f"{cp_web}/tasks/")
    row = page.locator('tr[data-task="weekday-books"]')
    expect(row).to_contain_text("30 6 * * 1-5")
    expect(row).to_contain_text("active")
    screenshot(page, "tasks-list")
    page.goto(f"{cp_web}/tasks/{task.pk}/delete/")
    expect(page.locator("main")).to_contain_text("1 job of this task is still active")
    screenshot(page, "tasks-delete")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{cp_web}/tasks/{task.pk}/")
    screenshot(page, "tasks-detail-phone")

    assert blocked == [], f"the task pages loaded from outside the control plane: {blocked}"
    assert script_errors == []
