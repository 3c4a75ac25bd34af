"""Monitor rules in Chromium against a real ``crawlfleet web``: an operator adds a rule on a task
page through the real form (only the chosen kind's inputs show; a bad percentage is refused
beside its input), sees it listed, and reads a degraded job's verdict on its page. Nothing is
loaded from outside the control plane.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from controlplane.jobs.models import Job
from controlplane.monitors import services
from controlplane.monitors.models import MonitorRule
from controlplane.scheduling.models import TaskRun
from tests.fixtures.browser import confine
from tests.fixtures.dashboard import log_in, screenshot
from tests.fixtures.joblists import World

pytestmark = pytest.mark.browser

BREACH = "HTTP 403 on 30 of 100 responses (30%), above 10%"


def test_an_operator_adds_a_rule_on_a_task_page_and_reads_a_jobs_verdict(
    cp_web, page, dashboard_users, transactional_db
):
    world = World.build()
    task = world.tasks["books-daily"]
    share = services.save_rule(
        services.new_rule(world.project),
        {"kind": "status_share", "params": {"status": 403, "percent": 10}},
    )
    report = {
        "breaches": [
            {
                "rule": share.pk,
                "kind": "status_share",
                "scope": "project",
                "outcome": "degraded",
                "rule_text": share.description,
                "message": BREACH,
                "figures": {"status": 403, "count": 30, "responses": 100, "percent": 30.0},
            }
        ],
        "not_evaluated": [
            {
                "rule": 0,
                "rule_text": "items at least 50% of the median of the last 10 runs",
                "why": "only 1 earlier successful run(s); 3 needed to compare",
            }
        ],
        "held": [{"rule": 0, "rule_text": "at least 10 items"}],
    }
    run, (job,) = world.run(
        "books-daily",
        Job.State.DEGRADED,
        at=timezone.now() - timedelta(hours=1),
        run_state=TaskRun.State.DEGRADED,
        reason=f"broke a monitor: {BREACH}",
        cause="monitor",
        monitor_report=report,
        items=70,
        pages=100,
    )

    blocked = confine(page, cp_web)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/tasks/{task.pk}/")
    card = page.locator("#monitors")
    expect(card.locator(f'tr[data-rule="{share.pk}"]')).to_contain_text("project default")

    card.get_by_text("Add a rule").click()
    form = card.locator("form.monitor-form")
    form.get_by_label("Kind").select_option("field_coverage")
    expect(form.get_by_label("Item field")).to_be_visible()
    expect(form.get_by_label("Count")).to_be_hidden()
    expect(form.get_by_label("HTTP status")).to_be_hidden()
    form.get_by_label("Item field").fill("price")
    form.get_by_label("Percent").fill("-5")
    form.get_by_label("When broken").select_option("failed")
    screenshot(page, "monitors-task-add")
    form.get_by_role("button", name="Add rule").click()

    # Refused by the domain, beside the input; the form keeps the kind and what was typed.
    expect(page.locator("#percent-error")).to_have_text("percent must be from 0 to 100, not -5")
    expect(page.get_by_label("Kind")).to_have_value("field_coverage")
    expect(page.get_by_label("Item field")).to_have_value("price")
    expect(page.get_by_label("Count")).to_be_hidden()
    assert not MonitorRule.objects.filter(task=task).exists()
    screenshot(page, "monitors-form-refused")

    page.get_by_label("Percent").fill("90")
    page.get_by_role("button", name="Add rule").click()
    page.wait_for_url(re.compile(rf"/tasks/{task.pk}/#monitors$"))
    expect(page.locator(".messages")).to_contain_text("filled in at least 90%” added")
    rule = MonitorRule.objects.get(task=task)
    assert (rule.kind, rule.params, rule.outcome) == (
        "field_coverage",
        {"field": "price", "percent": 90},
        "failed",
    )
    row = page.locator(f'#monitors tr[data-rule="{rule.pk}"]')
    expect(row).to_contain_text("field 'price' filled in at least 90%")
    expect(row).to_contain_text("task")
    expect(row.locator(".badge.state-failed")).to_have_text("failed")
    screenshot(page, "monitors-task-card")

    page.goto(f"{cp_web}/projects/{world.project.pk}/#monitors")
    expect(page.locator(f'#monitors tr[data-rule="{share.pk}"]')).to_contain_text("Edit")
    expect(page.locator(f'#monitors tr[data-rule="{rule.pk}"]')).to_have_count(0)
    screenshot(page, "monitors-project-card")

    page.goto(f"{cp_web}/jobs/{job.pk}/")
    verdict = page.locator("#job-monitors")
    expect(verdict.locator(".breaches")).to_contain_text(BREACH)
    expect(verdict.locator(".breaches .badge.state-degraded")).to_have_text("degraded")
    expect(verdict.locator(".not-evaluated")).to_contain_text("3 needed to compare")
    expect(verdict.locator(".held")).to_contain_text("at least 10 items")
    expect(page.locator("#job-live")).to_have_attribute("data-state", "degraded")
    screenshot(page, "monitors-job-verdict")

    page.goto(f"{cp_web}/runs/{run.pk}/")
    expect(page.locator("#run-live")).to_contain_text(f"broke a monitor: {BREACH}")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{cp_web}/tasks/{task.pk}/#monitors")
    screenshot(page, "monitors-task-card-phone")

    assert blocked == [], f"the pages loaded from outside the control plane: {blocked}"
    assert script_errors == []
