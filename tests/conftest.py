"""Suite-wide fixtures and the rule that tests needing real services never skip quietly."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.api",
    "tests.fixtures.demosite",
    "tests.fixtures.redis",
    "tests.fixtures.kafka",
    "tests.fixtures.proxy",
    "tests.fixtures.scrapyd",
    "tests.fixtures.controlplane",
    "tests.fixtures.fleet",
    "tests.fixtures.postgres",
    "tests.fixtures.browser",
    "tests.fixtures.dashboard",
    "tests.fixtures.taskpages",
    "tests.fixtures.joblists",
    "tests.fixtures.webhook",
]

SERVICE_MARKERS = ("redis", "kafka", "browser", "scrapyd", "proxy", "postgres", "chaos")
_skipped_service_tests: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and any(m in report.keywords for m in SERVICE_MARKERS):
        _skipped_service_tests.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped service test hides a missing setup step: fail the run unless told otherwise."""
    if _skipped_service_tests and os.environ.get("CRAWLFLEET_ALLOW_SERVICE_SKIPS") != "1":
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "FAILED: tests that need a real service were skipped: "
                + ", ".join(_skipped_service_tests),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
