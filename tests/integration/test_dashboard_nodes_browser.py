"""The nodes pages in a real browser: a real ``crawlfleet web`` and ``crawlfleet poller``
against real Scrapyd nodes. In-process checks of the same pages are in test_dashboard_nodes.py.
"""

from __future__ import annotations

import socket

import pytest

from controlplane.nodes.models import Node
from tests.fixtures.browser import confine
from tests.fixtures.dashboard import log_in, screenshot
from tests.integration.test_dashboard_nodes import SECRET


@pytest.mark.browser
@pytest.mark.scrapyd
def test_the_fleet_goes_live_drains_and_a_stopped_node_goes_down_without_a_reload(
    cp_web, cp_process, page, dashboard_users, scrapyd_nodes
):
    first, second = scrapyd_nodes(2)
    for index, node in enumerate((first, second), start=1):
        Node.objects.create(name=f"node-{index}", url=node.url, password=SECRET)
    cp_process("poller")
    blocked = confine(page, cp_web)
    log_in(page, cp_web, dashboard_users["admin"])

    page.goto(f"{cp_web}/nodes/")
    page.evaluate("window.notReloaded = true")
    for name in ("node-1", "node-2"):
        page.locator(f'tr[data-node="{name}"][data-state="up"]').wait_for()
    screenshot(page, "nodes-list")

    # Drain from the page: the row says so, the record too, and undrain brings it back.
    page.locator('tr[data-node="node-2"]').get_by_role("button", name="Drain").click()
    page.locator(".messages", has_text="node-2 is draining").wait_for()
    page.locator('tr[data-node="node-2"][data-state="draining"]').wait_for()
    assert Node.objects.get(name="node-2").draining
    page.locator('tr[data-node="node-2"]').get_by_role("button", name="Undrain").click()
    page.locator('tr[data-node="node-2"][data-state="up"]').wait_for()
    assert not Node.objects.get(name="node-2").draining

    # A node that stops goes down on the open page, by the page's own refresh.
    page.evaluate("window.notReloaded = true")
    first.stop()
    page.locator('tr[data-node="node-1"][data-state="down"]').wait_for(timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "nodes-list-one-down")

    page.get_by_role("link", name="node-1").click()
    page.locator('#node-live[data-state="down"]').wait_for()
    page.locator('.state-changes tr[data-change="down"]').wait_for()
    assert page.locator("canvas[data-chart]").count() == 1
    screenshot(page, "nodes-node-page")
    assert SECRET not in page.content()

    page.get_by_role("link", name="Edit").click()
    assert page.input_value("#id_password") == ""
    assert SECRET not in page.content()
    screenshot(page, "nodes-edit")
    page.goto(f"{cp_web}/nodes/new/")
    page.fill("#id_name", "ghost")
    # Bound but not listening: refused, and no other process can take the port meanwhile.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    page.fill("#id_url", f"http://127.0.0.1:{closed.getsockname()[1]}")
    page.get_by_role("button", name="Add node").click()
    error = page.locator("#url-error")
    error.wait_for(timeout=30_000)
    closed.close()
    assert "no answer from a Scrapyd node" in error.inner_text()
    assert not Node.objects.filter(name="ghost").exists()
    screenshot(page, "nodes-add-refused")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{cp_web}/nodes/")
    page.locator('tr[data-node="node-2"][data-state="up"]').wait_for()
    screenshot(page, "nodes-list-phone")
    assert blocked == []
