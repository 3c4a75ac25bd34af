"""The API docs (Swagger UI at /api/v1/docs) in a real browser, on a machine without internet.

Every request that leaves the control plane is aborted and recorded: the page must render the
API's operations from the control plane's own static files, and ask nothing of anyone else.
"""

from __future__ import annotations

import pytest
import requests

from tests.fixtures.browser import confine

pytestmark = [pytest.mark.browser]
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def test_api_docs_render_from_the_control_plane_alone(cp_web, page):
    blocked = confine(page, cp_web)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    schema = requests.get(f"{cp_web}/api/v1/openapi.json", timeout=10).json()
    operations = sum(len(HTTP_METHODS & set(item)) for item in schema["paths"].values())

    response = page.goto(f"{cp_web}/api/v1/docs", wait_until="networkidle")
    assert response.status == 200
    assert blocked == [], f"the docs tried to load from outside the control plane: {blocked}"
    job_list = page.locator(".opblock-get:has(.opblock-summary-path[data-path='/api/v1/jobs'])")
    job_list.wait_for()
    assert "List jobs, newest first" in job_list.inner_text()
    assert page.locator(".opblock").count() == operations
    assert page.title() == "crawlfleet"

    assert blocked == []
    assert script_errors == []
