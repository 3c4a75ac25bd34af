"""Chains in Chromium against a real `crawlfleet web`: an operator makes B run after A with the
task form (no cron of its own), sees the chain on both task pages, is refused a loop beside the
field, and follows a chained run to its upstream run. Nothing is loaded from outside.
"""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from controlplane.deploys.models import Project, Version
from controlplane.jobs import chains
from controlplane.jobs.runs import create_run
from controlplane.scheduling.models import Task, TaskRun
from tests.fixtures.browser import confine
from tests.fixtures.dashboard import log_in, screenshot

pytestmark = [pytest.mark.browser]


def test_an_operator_chains_b_after_a_and_follows_the_runs(cp_web, page, dashboard_users):
    project = Project.objects.create(name="crawler")
    project.current_version = Version.objects.create(
        project=project, version="100", egg=b"egg", sha256="0" * 64, size=3, spiders=["books"]
    )
    project.save()
    a = Task.objects.create(project=project, name="a", spider="books", cron="0 3 * * *")

    blocked = confine(page, cp_web)
    log_in(page, cp_web, dashboard_users["operator"])
    page.goto(f"{cp_web}/tasks/new/")
    page.fill("#id_name", "b")
    page.select_option("#id_project", "crawler")
    page.fill("#id_spider", "books")
    page.fill("#id_cron", "")
    page.select_option("#id_after_task", "a")
    page.select_option("#id_after_condition", "always")
    page.check("#id_pass_upstream")
    screenshot(page, "tasks-form-chain")
    page.get_by_role("button", name="Create task").click()
    expect(page.locator("#chain-upstream")).to_contain_text("a always")
    expect(page.locator("#chain-upstream")).to_contain_text("its run passed as spider arguments")
    b = Task.objects.get(name="b")
    assert (b.cron, b.after_task_id, b.pass_upstream) == ("", a.pk, True)
    screenshot(page, "tasks-detail-chained")

    # A → B → A is refused beside the field, and nothing changes.
    page.goto(f"{cp_web}/tasks/{a.pk}/edit/")
    page.select_option("#id_after_task", "b")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#after_task-error")).to_have_text("would make a loop: a → b → a")
    a.refresh_from_db()
    assert a.after_task_id is None
    screenshot(page, "tasks-form-chain-loop")

    page.goto(f"{cp_web}/tasks/{a.pk}/")
    page.locator("#chain-downstream").get_by_role("link", name="b").click()
    page.wait_for_url(f"{cp_web}/tasks/{b.pk}/")

    run_a = create_run(a, timezone.now(), TaskRun.Trigger.MANUAL)
    TaskRun.objects.filter(pk=run_a.pk).update(
        state=TaskRun.State.FAILED, finished_at=timezone.now()
    )
    run_a.refresh_from_db()
    [run_b] = chains.start_downstream(run_a)
    page.goto(f"{cp_web}/runs/{run_b.pk}/")
    expect(page.locator("#upstream-run")).to_contain_text(f"run {run_a.pk} of a")
    screenshot(page, "runs-detail-chained")
    page.locator("#upstream-run").get_by_role("link").click()
    expect(page.locator("#downstream-runs")).to_contain_text(f"run {run_b.pk} of b")
    screenshot(page, "runs-detail-upstream")
    assert blocked == []
