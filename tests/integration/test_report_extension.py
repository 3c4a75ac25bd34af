"""OutcomeReporter in a real ``scrapy crawl`` against the demo site, reporting to a real
``crawlfleet web``: started, heartbeats, finished with final stats, and obeying a stop reply."""

from __future__ import annotations

import csv
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.lib.procutil import free_port
from crawler.extensions.report import jsonable
from tests.fixtures.jobs import create_adhoc_run


def dispatched_job() -> tuple[Job, str]:
    """A job as the dispatcher leaves it: on a node, with a report secret."""
    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="1", egg=b"-", sha256="0" * 64, size=1, spiders=["books"]
    )
    job = create_adhoc_run(project, "books", version=version)
    secret = job.issue_report_token()
    job.state = Job.State.PENDING
    job.save()
    return job, secret


def report_settings(cp_web: str, job: Job, secret: str, interval: float = 0.2) -> dict[str, str]:
    return {
        "CRAWLFLEET_REPORT_URL": f"{cp_web}/api/v1/report/{job.scrapyd_job_id}",
        "CRAWLFLEET_JOB_TOKEN": secret,
        "CRAWLFLEET_HEARTBEAT_INTERVAL": str(interval),
    }


def csv_rows(result) -> int:
    [path] = result.csv_files("books")
    with path.open(newline="") as handle:
        return len(list(csv.DictReader(handle)))


def test_stats_become_json():
    stamp = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert jsonable({"start_time": stamp, "took": dt.timedelta(seconds=2), "n": 1.5, "s": {3}}) == {
        "start_time": "2026-01-02T03:04:05+00:00",
        "took": 2.0,
        "n": 1.5,
        "s": [3],
    }


def test_crawl_reports_start_heartbeats_and_outcome(cp_web, run_crawl, demo_site):
    job, secret = dispatched_job()
    result = run_crawl(
        "books",
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html"},
        settings={**report_settings(cp_web, job, secret), "DOWNLOAD_DELAY": "0.005"},
    )
    assert result.returncode == 0, result.output
    assert csv_rows(result) == 200

    job.refresh_from_db()
    assert job.state == Job.State.RUNNING  # the poller classifies once the node says it ended
    assert job.started_at is not None
    assert job.reported_final
    assert job.finish_reason == "finished"
    assert job.items == 200
    assert job.pages >= 210
    assert job.last_heartbeat >= job.started_at
    # started + at least one heartbeat came back with "continue"; nothing failed.
    assert job.stats["crawlfleet/reports_sent"] >= 2, job.stats
    assert "crawlfleet/report_failures" not in job.stats
    assert job.stats["crawlfleet/fields_seen"] == job.stats["crawlfleet/fields/upc"] == 200
    assert dt.datetime.fromisoformat(job.stats["start_time"]) <= job.last_heartbeat
    assert "reported the outcome (finished)" in result.output


def test_stop_reply_closes_the_crawl(cp_web, run_crawl, demo_site):
    job, secret = dispatched_job()
    settings = {**report_settings(cp_web, job, secret, 0.2), "DOWNLOAD_DELAY": "0.05"}
    with ThreadPoolExecutor(1) as pool:
        crawl = pool.submit(
            run_crawl,
            "books",
            args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html"},
            settings=settings,
        )
        deadline = time.monotonic() + 60
        while True:  # until the crawl is under way and has reported progress
            job.refresh_from_db()
            if job.state == Job.State.RUNNING and job.items > 0:
                break
            assert not crawl.done(), crawl.result().output
            assert time.monotonic() < deadline, "the crawl never reported progress"
            time.sleep(0.1)
        Job.objects.filter(pk=job.pk).update(
            cancel_requested=True, reason="cancel requested by an operator"
        )
        result = crawl.result(timeout=120)

    assert result.returncode == 0, result.output
    assert "the control plane asked this crawl to stop" in result.output
    assert "'finish_reason': 'stopped_by_controlplane'" in result.output
    assert csv_rows(result) < 200
    job.refresh_from_db()
    assert job.reported_final
    assert job.finish_reason == "stopped_by_controlplane"


def test_unreachable_control_plane_never_breaks_the_crawl(run_crawl, demo_site):
    result = run_crawl(
        "books",
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html", "max_pages": "2"},
        settings={
            "CRAWLFLEET_REPORT_URL": f"http://127.0.0.1:{free_port()}/api/v1/report/x",
            "CRAWLFLEET_JOB_TOKEN": "secret",
            "CRAWLFLEET_HEARTBEAT_INTERVAL": "0.2",
            "CRAWLFLEET_REPORT_TIMEOUT": "1",
        },
    )
    assert result.returncode == 0, result.output
    assert csv_rows(result) == 40
    assert "could not report started to the control plane (1 failed in a row)" in result.output
    assert "ERROR" not in result.output.split("Dumping Scrapy stats")[0]
    assert "did not reach the control plane" in result.output
    assert "'crawlfleet/report_failures':" in result.output
    assert "Traceback" not in result.output


def test_without_a_report_url_nothing_is_reported(run_crawl, demo_site):
    result = run_crawl(
        "books",
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html", "max_pages": "1"},
    )
    assert result.returncode == 0, result.output
    assert "crawlfleet/report" not in result.output


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
