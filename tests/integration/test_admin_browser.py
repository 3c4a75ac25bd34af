"""The Django admin in a real browser: operators can see and edit the fleet before a dashboard."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from controlplane.deploys.models import Project
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task
from tests.fixtures.browser import confine

pytestmark = [pytest.mark.browser]

SECRET = "node-pass-Zq81"


@pytest.fixture
def admin_login(transactional_db):
    get_user_model().objects.create_superuser("ops", "ops@example.invalid", "correct-horse-42")
    return "ops", "correct-horse-42"


def test_admin_lists_and_edits_nodes_without_revealing_passwords(cp_web, admin_login, page):
    node = Node.objects.create(
        name="node-a", url="http://127.0.0.1:6800", username="scrapy", password=SECRET, tags=["eu"]
    )
    project = Project.objects.create(name="crawler")
    Task.objects.create(name="nightly-books", project=project, spider="books", cron="0 3 * * *")
    blocked = confine(page, cp_web)

    page.goto(f"{cp_web}/admin/login/")
    page.fill("#id_username", admin_login[0])
    page.fill("#id_password", admin_login[1])
    page.click("input[type=submit]")
    page.wait_for_url(f"{cp_web}/admin/")

    for section in (
        "nodes/node",
        "deploys/project",
        "deploys/version",
        "scheduling/task",
        "jobs/job",
    ):
        response = page.goto(f"{cp_web}/admin/{section}/")
        assert response.status == 200, section

    page.goto(f"{cp_web}/admin/nodes/node/")
    assert "node-a" in page.content()

    page.goto(f"{cp_web}/admin/nodes/node/{node.pk}/change/")
    assert SECRET not in page.content()
    assert page.input_value("#id_password") == ""
    page.fill("#id_weight", "2.5")
    page.click("input[name=_save]")
    page.wait_for_url(f"{cp_web}/admin/nodes/node/")

    node.refresh_from_db()
    assert node.weight == 2.5
    assert node.password == SECRET  # an empty password field keeps the stored one

    page.goto(f"{cp_web}/admin/scheduling/task/")
    assert "nightly-books" in page.content()
    assert blocked == [], f"the admin tried to load from outside the control plane: {blocked}"
