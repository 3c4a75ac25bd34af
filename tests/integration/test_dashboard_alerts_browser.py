"""The alerts pages in Chromium against a real `crawlfleet web`: an admin adds a signed webhook
channel pointing at a real HTTP receiver on 127.0.0.1, sends a test alert (the web process sends
it at once), sees the receiver get it and the page say so, adds a rule, and finds the delivery in
the history. The secret never reaches the browser; nothing is loaded from outside the control
plane.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from controlplane.alerts import transports
from controlplane.alerts.models import AlertRule, Channel, Delivery
from tests.fixtures.browser import confine
from tests.fixtures.common import wait_until
from tests.fixtures.dashboard import log_in, screenshot

pytestmark = [pytest.mark.browser]
SECRET = "browser-hmac-secret-never-shown-42"


def test_an_admin_adds_a_webhook_sends_a_test_alert_and_finds_it_in_the_history(
    cp_web, page, dashboard_users, webhook_receiver
):
    blocked = confine(page, cp_web)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    log_in(page, cp_web, dashboard_users["admin"])
    page.get_by_role("link", name="Alerts").click()
    page.wait_for_url(f"{cp_web}/alerts/")
    expect(page.locator("table.channels")).to_contain_text("No channels yet")
    page.get_by_role("link", name="Add webhook channel").click()

    page.fill("#id_name", "ops-hook")
    page.fill("#id_url", "ftp://127.0.0.1/nowhere")
    page.fill("#id_secret", SECRET)
    page.get_by_role("button", name="Add channel").click()
    expect(page.locator("#url-error")).to_contain_text("http:// or https://")
    expect(page.locator("#id_secret")).to_have_value("")  # a write-only field comes back empty
    assert SECRET not in page.content()
    assert not Channel.objects.exists()
    screenshot(page, "alerts-channel-form-refused")

    page.fill("#id_url", f"{webhook_receiver.url}/alerts")
    page.fill("#id_secret", SECRET)
    page.get_by_role("button", name="Add channel").click()
    page.wait_for_url(f"{cp_web}/alerts/")
    expect(page.locator(".messages")).to_contain_text("Channel ops-hook added.")
    row = page.locator("tr[data-channel='ops-hook']")
    expect(row).to_contain_text(webhook_receiver.url)
    expect(row).to_contain_text("none yet")

    row.get_by_role("button", name="Send test alert").click()
    expect(page.locator(".messages")).to_contain_text(
        f"Test alert sent to ops-hook ({webhook_receiver.url})."
    )
    [received] = wait_until(webhook_receiver.ok, 10, "test alert at the receiver")
    assert received.path == "/alerts"
    assert received.headers["x-crawlfleet-event"] == "test"
    timestamp = received.headers["x-crawlfleet-timestamp"]
    signature = received.headers["x-crawlfleet-signature"]
    assert transports.verify(SECRET, timestamp, received.body, signature)
    delivery = Delivery.objects.get()
    assert received.headers["x-crawlfleet-delivery"] == str(delivery.uid)
    expect(page.locator("tr[data-channel='ops-hook']")).to_contain_text("sent")
    screenshot(page, "alerts-overview")

    page.get_by_role("link", name="Add rule").click()
    page.fill("#id_name", "nodes-to-ops")
    page.select_option("#id_channel", "ops-hook")
    page.check("#kind-node_down")
    page.check("#kind-node_back")
    page.fill("#id_cooldown", "300")
    page.fill("#id_quiet_start", "22:00")
    page.fill("#id_quiet_end", "07:00")
    page.fill("#id_quiet_timezone", "Europe/Paris")
    screenshot(page, "alerts-rule-form")
    page.get_by_role("button", name="Add rule").click()
    page.wait_for_url(f"{cp_web}/alerts/")
    expect(page.locator("tr[data-rule='nodes-to-ops']")).to_contain_text("22:00 to 07:00")
    rule = AlertRule.objects.get()
    assert (rule.channel.name, rule.event_kinds) == ("ops-hook", ["node_back", "node_down"])

    page.get_by_role("link", name="Delivery history").click()
    page.wait_for_url(f"{cp_web}/alerts/deliveries/")
    history_row = page.locator(f"tr[data-delivery='{delivery.pk}']")
    expect(history_row).to_contain_text("ops-hook")
    expect(history_row).to_contain_text("test alert")
    expect(history_row.locator(".badge")).to_have_text("sent")
    screenshot(page, "alerts-deliveries")
    history_row.get_by_role("link").first.click()
    page.wait_for_url(f"{cp_web}/alerts/deliveries/{delivery.pk}/")
    expect(page.locator("table.attempts tr[data-attempt='1']")).to_contain_text("sent")
    expect(page.locator("h1")).to_contain_text(f"Delivery {delivery.pk}")
    screenshot(page, "alerts-delivery")

    page.goto(f"{cp_web}/alerts/channels/{Channel.objects.get().pk}/edit/")
    expect(page.locator("#id_secret")).to_have_value("")
    expect(page.locator(".help").first).to_be_visible()
    assert SECRET not in page.content()
    screenshot(page, "alerts-channel-edit")
    assert blocked == [], f"pages loaded from outside the control plane: {blocked}"
    assert script_errors == []
