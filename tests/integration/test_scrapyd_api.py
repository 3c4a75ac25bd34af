"""The Scrapyd-compatible API against real clients, a real control plane and real Scrapyd nodes.

One stack serves the module: two ``crawlfleet node`` processes, ``crawlfleet web`` listening on
its own port and on a Scrapyd port (``--scrapyd-bind``), a scheduler and a poller. Each test
registers the nodes and its token again, because the test database is emptied between tests.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import scrapyd_api
from scrapyd_client import ScrapydClient

from controlplane.accounts.models import ApiToken, AuditEntry
from controlplane.deploys.models import Project, Version
from controlplane.jobs.models import Job
from controlplane.lib.procutil import ManagedProcess, free_port
from controlplane.nodes.models import Node
from tests.fixtures.common import REPO_ROOT, VENV_BIN, wait_until, zip_bytes
from tests.fixtures.controlplane import database_url
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd, pytest.mark.slow]

# ScrapydWeb's test for a Scrapyd jobs page, and its row pattern (whitespace is insignificant).
SCRAPYDWEB_PAGE = re.compile(r"<body><h1>Jobs</h1>")
SCRAPYDWEB_ROW = re.compile(
    r"""<tr><td>(?P<Project>.*?)</td><td>(?P<Spider>.*?)</td><td>(?P<Job>.*?)</td>
    (?:<td>(?P<PID>.*?)</td>)?(?:<td>(?P<Start>.*?)</td>)?(?:<td>(?P<Runtime>.*?)</td>)?
    (?:<td>(?P<Finish>.*?)</td>)?(?:<td>(?P<Log>.*?)</td>)?[\w\W]*?</tr>""",
    re.X,
)


@dataclass
class Stack:
    web: str  # http://127.0.0.1:PORT
    scrapyd_port: int
    nodes: list[ScrapydNode]

    @property
    def facade(self) -> str:
        return f"{self.web}/scrapyd/"

    @property
    def port_root(self) -> str:
        return f"http://127.0.0.1:{self.scrapyd_port}/"


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory: pytest.TempPathFactory, demo_site) -> Iterator[Stack]:
    from django.conf import settings

    tmp = tmp_path_factory.mktemp("scrapyd-api")
    factory = NodeFactory(tmp / "nodes")
    web_port, scrapyd_port = free_port(), free_port()
    web = f"http://127.0.0.1:{web_port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "CRAWLFLEET_DATABASE_URL": database_url(),
        "CRAWLFLEET_DATA_DIR": str(tmp / "cp-data"),
        "CRAWLFLEET_SECRET_KEY": settings.SECRET_KEY,
        "CRAWLFLEET_PUBLIC_URL": web,
        "CRAWLFLEET_SCHEDULER_TICK": "0.5",
        "CRAWLFLEET_POLL_INTERVAL": "1",
        "CRAWLFLEET_NODE_TIMEOUT": "5",
        "CRAWLFLEET_SPIDER_HEARTBEAT": "1",
        "CRAWLFLEET_SCRAPYD_LISTING_CACHE": "0",
    }
    processes: list[ManagedProcess] = []

    def start(name: str, *argv: str) -> ManagedProcess:
        proc = ManagedProcess(
            name, [str(VENV_BIN / "crawlfleet"), *argv], log_path=tmp / f"{name}.log", env=env
        ).start()
        processes.append(proc)
        return proc

    try:
        nodes = factory(2, max_proc=2, poll_interval=0.2)
        web_proc = start(
            "web", "web", "--bind", f"127.0.0.1:{web_port}", "--scrapyd-bind",
            f"127.0.0.1:{scrapyd_port}",
        )  # fmt: skip
        web_proc.wait_for_port(web_port, timeout=60)
        web_proc.wait_for_port(scrapyd_port, timeout=10)
        start("scheduler", "scheduler")
        start("poller", "poller")
        yield Stack(web, scrapyd_port, nodes)
    finally:
        for proc in reversed(processes):
            proc.stop()
        factory.close()


@pytest.fixture
def fleet(stack: Stack, transactional_db) -> list[Node]:
    return [
        Node.objects.create(name=f"node-{i}", url=node.url, state=Node.State.UP, capacity=2)
        for i, node in enumerate(stack.nodes)
    ]


@pytest.fixture
def operator_token(transactional_db) -> str:
    return ApiToken.create("ci", ApiToken.Role.OPERATOR)[1]


@pytest.fixture
def viewer_token(transactional_db) -> str:
    return ApiToken.create("watcher", ApiToken.Role.VIEWER)[1]


def deployed(stack: Stack, token: str, egg: EggFile) -> None:
    # python-scrapyd-api joins absolute paths (/addversion.json): it needs the port root.
    api = scrapyd_api.ScrapydAPI(stack.port_root.rstrip("/"), auth=("ci", token))
    assert api.add_version(egg.project, egg.version, egg.data) >= 1


def versions_on_nodes(stack: Stack, project: str) -> list[list[str]]:
    return [node.get("listversions.json", project=project)["versions"] for node in stack.nodes]


# --- deploys -------------------------------------------------------------------------------------
def test_scrapyd_deploy_reaches_every_node(stack, fleet, operator_token, tmp_path):
    """The real scrapyd-deploy, from a scrapy.cfg target, with the token as password."""
    shutil.copytree(
        REPO_ROOT / "crawler", tmp_path / "crawler", ignore=shutil.ignore_patterns("__pycache__")
    )
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "scrapy.cfg")
    config["deploy:fleet"] = {
        "url": stack.facade,
        "project": "crawler",
        "username": "ci",
        "password": operator_token,
    }
    with open(tmp_path / "scrapy.cfg", "w") as handle:
        config.write(handle)
    result = subprocess.run(
        [str(VENV_BIN / "scrapyd-deploy"), "fleet", "--version", "20261201120000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status": "ok"' in result.stdout + result.stderr
    assert versions_on_nodes(stack, "crawler") == [["20261201120000"]] * 2
    version = Version.objects.get(project__name="crawler", version="20261201120000")
    assert "books" in version.spiders
    assert AuditEntry.objects.filter(action="deploy", actor="ci").exists()


def test_a_non_numeric_version_is_refused_with_a_reason(
    stack, fleet, operator_token, failproject_egg
):
    api = scrapyd_api.ScrapydAPI(stack.port_root.rstrip("/"), auth=("ci", operator_token))
    with pytest.raises(scrapyd_api.exceptions.ScrapydResponseError, match="not numeric"):
        api.add_version("failproject", "r10", failproject_egg.data)
    assert not Version.objects.exists()
    assert versions_on_nodes(stack, "failproject") == [[], []]


# --- every endpoint, through both real clients -------------------------------------------------
def test_scrapyd_client_runs_a_crawl_end_to_end(stack, fleet, operator_token, failproject_egg):
    deployed(stack, operator_token, failproject_egg)
    client = ScrapydClient(stack.facade.rstrip("/"), username="ci", password=operator_token)
    assert client.projects() == ["failproject"]
    assert client.versions("failproject") == [failproject_egg.version]
    assert "ok" in client.spiders("failproject")
    assert client.daemonstatus()["status"] == "ok"

    job_id = client.schedule(
        "failproject", "sleepy", args=[("seconds", "4"), ("setting", "LOG_LEVEL=INFO")]
    )
    job = Job.objects.get(scrapyd_job_id=job_id)
    assert job.args == {"seconds": "4"}
    assert job.settings == {"LOG_LEVEL": "INFO"}
    seen = []

    def finished() -> bool:
        listing = client.jobs("failproject")
        for state in ("pending", "running", "finished"):
            if any(entry["id"] == job_id for entry in listing[state]) and state not in seen:
                seen.append(state)
        return "finished" in seen

    wait_until(finished, 90, "the job to finish")
    assert seen == ["pending", "running", "finished"]
    assert client.status(job_id)["currstate"] == "finished"
    entry = next(e for e in client.jobs("failproject")["finished"] if e["id"] == job_id)
    assert entry["log_url"] == f"/scrapyd/logs/failproject/sleepy/{job_id}.log"
    assert {"start_time", "end_time", "items_url", "project", "spider"} <= set(entry)

    log = requests.get(stack.web + entry["log_url"], auth=("ci", operator_token), timeout=10)
    assert log.status_code == 200
    assert "Spider closed (finished)" in log.text
    assert Job.objects.get(scrapyd_job_id=job_id).state == Job.State.SUCCEEDED
    tail = requests.get(
        stack.web + entry["log_url"], auth=("ci", operator_token), headers={"Range": "bytes=-200"}
    )
    assert tail.status_code == 206
    assert len(tail.content) == 200
    assert log.content.endswith(tail.content)

    long_one = client.schedule("failproject", "sleepy", args=[("seconds", "120")])
    wait_until(lambda: client.status(long_one)["currstate"] == "running", 60, "running")
    assert client.cancel("failproject", long_one)["prevstate"] == "running"
    wait_until(lambda: client.status(long_one)["currstate"] == "finished", 60, "cancelled")
    assert client.delversion("failproject", failproject_egg.version)["status"] == "ok"
    assert versions_on_nodes(stack, "failproject") == [[], []]
    assert client.projects() == []


def test_python_scrapyd_api_schedules_cancels_and_deletes(
    stack, fleet, operator_token, failproject_egg
):
    api = scrapyd_api.ScrapydAPI(stack.port_root.rstrip("/"), auth=("ci", operator_token))
    assert api.add_version("failproject", failproject_egg.version, failproject_egg.data) >= 1
    assert api.list_projects() == ["failproject"]
    assert api.list_versions("failproject") == [failproject_egg.version]
    assert "sleepy" in api.list_spiders("failproject")
    job_id = api.schedule("failproject", "sleepy", seconds="120", priority="5")
    assert Job.objects.get(scrapyd_job_id=job_id).priority == 5.0
    wait_until(lambda: api.job_status("failproject", job_id) == "running", 60, "running")
    running = api.list_jobs("failproject")["running"]
    assert [e["id"] for e in running] == [job_id]
    assert isinstance(running[0]["pid"], int)

    assert api.cancel("failproject", job_id) == "running"
    wait_until(lambda: api.job_status("failproject", job_id) == "finished", 60, "cancelled")
    assert Job.objects.get(scrapyd_job_id=job_id).state == Job.State.CANCELLED
    assert AuditEntry.objects.filter(action="job.cancel", actor="ci").exists()

    assert api.delete_version("failproject", failproject_egg.version) is True
    assert versions_on_nodes(stack, "failproject") == [[], []]
    assert api.list_projects() == []
    with pytest.raises(scrapyd_api.exceptions.ScrapydResponseError, match="not found"):
        api.delete_project("failproject")  # its only version is gone: so is the project


def test_a_retried_job_keeps_the_id_its_client_knows(stack, fleet, operator_token, failproject_egg):
    deployed(stack, operator_token, failproject_egg)
    Project.objects.filter(name="failproject").update(max_attempts=2, retry_backoff=0)
    client = ScrapydClient(stack.facade.rstrip("/"), username="ci", password=operator_token)
    job_id = client.schedule("failproject", "init_error")
    wait_until(lambda: Job.objects.filter(chain_id=job_id).exists(), 90, "a retry")
    wait_until(lambda: client.status(job_id)["currstate"] == "finished", 90, "the retry to end")
    attempts = Job.objects.filter(run__jobs__scrapyd_job_id=job_id).distinct()
    assert sorted(attempts.values_list("attempt", flat=True)) == [1, 2]
    ids = [e["id"] for e in client.jobs("failproject")["finished"]]
    assert ids.count(job_id) == 1  # one chain, shown once under the client's id


# --- pages ---------------------------------------------------------------------------------------
def test_the_jobs_page_parses_as_scrapyds(stack, fleet, operator_token, failproject_egg):
    deployed(stack, operator_token, failproject_egg)
    client = ScrapydClient(stack.facade.rstrip("/"), username="ci", password=operator_token)
    done = client.schedule("failproject", "ok")
    waiting = client.schedule("failproject", "sleepy", args=[("seconds", "60")])
    wait_until(lambda: client.status(done)["currstate"] == "finished", 90, "finished")
    page = requests.get(stack.facade + "jobs", auth=("ci", operator_token), timeout=10)
    assert page.status_code == 200
    html = page.text
    assert SCRAPYDWEB_PAGE.search(html)
    rows = [
        m.groupdict()
        for m in SCRAPYDWEB_ROW.finditer(re.sub(r"<thead>.*?</thead>", "", html, flags=re.S))
    ]
    by_job = {row["Job"]: row for row in rows}
    assert by_job[done]["Finish"]
    assert f"/scrapyd/logs/failproject/ok/{done}.log" in by_job[done]["Log"]
    assert waiting in by_job
    # Scrapyd's own structure: one table#jobs, three bodies, headers in thead.
    assert html.count('<table id="jobs">') == 1
    assert [m for m in re.findall(r"<th colspan=\"\d+\">(\w+)</th>", html)] == [
        "Pending",
        "Running",
        "Finished",
    ]
    client.cancel("failproject", waiting)


def test_the_api_at_the_root_of_its_own_port(
    stack, fleet, viewer_token, operator_token, failproject_egg
):
    """ScrapydWeb and Gerapy take host:port only: the same API, without the /scrapyd/ prefix."""
    deployed(stack, operator_token, failproject_egg)
    client = ScrapydClient(stack.port_root.rstrip("/"), username="x", password=viewer_token)
    assert client.projects() == ["failproject"]
    assert client.daemonstatus()["node_name"] == "crawlfleet"
    page = requests.get(stack.port_root + "jobs", auth=("x", viewer_token), timeout=10)
    assert SCRAPYDWEB_PAGE.search(page.text)
    # The dashboard and the REST API are not on the Scrapyd port.
    assert requests.get(stack.port_root + "api/v1/jobs", timeout=10).status_code == 404


# --- refusals ------------------------------------------------------------------------------------
def post(stack: Stack, endpoint: str, token: str | None, **kwargs) -> requests.Response:
    auth = ("ci", token) if token else None
    return requests.post(stack.facade + endpoint, auth=auth, timeout=30, **kwargs)


def test_bad_input_gets_scrapyds_error_envelope_and_stores_nothing(
    stack, fleet, operator_token, viewer_token, failproject_egg
):
    not_zip = post(
        stack, "addversion.json", operator_token, data={"project": "p", "version": "1"},
        files={"egg": ("egg", b"not a zip")},
    )  # fmt: skip
    assert not_zip.status_code == 200
    assert not_zip.json()["status"] == "error"
    assert "zip" in not_zip.json()["message"]
    no_entry = post(
        stack, "addversion.json", operator_token, data={"project": "p", "version": "1"},
        files={"egg": ("egg", zip_bytes({"p/__init__.py": ""}))},
    )  # fmt: skip
    assert no_entry.json()["status"] == "error"
    assert not Project.objects.filter(name="p").exists()

    deployed(stack, operator_token, failproject_egg)
    unknown = post(
        stack, "schedule.json", operator_token, data={"project": "failproject", "spider": "nope"}
    )
    assert unknown.json() == {
        "status": "error",
        "message": "spider 'nope' not found",
        "node_name": "crawlfleet",
    }
    missing = post(stack, "schedule.json", operator_token, data={"spider": "ok"})
    assert missing.json()["message"] == "'project' parameter is required"
    first = post(
        stack,
        "schedule.json",
        operator_token,
        data={"project": "failproject", "spider": "ok", "jobid": "mine-1"},
    )
    assert first.json()["jobid"] == "mine-1"
    again = post(
        stack,
        "schedule.json",
        operator_token,
        data={"project": "failproject", "spider": "ok", "jobid": "mine-1"},
    )
    assert again.json()["status"] == "error"
    assert "already used" in again.json()["message"]
    assert Job.objects.count() == 1

    wrong = requests.get(stack.facade + "listprojects.json", auth=("ci", "cf_wrong"), timeout=10)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert requests.get(stack.facade + "listprojects.json", timeout=10).status_code == 401
    as_viewer = post(
        stack, "schedule.json", viewer_token, data={"project": "failproject", "spider": "ok"}
    )
    assert as_viewer.status_code == 403
    assert as_viewer.json()["status"] == "error"
    by_get = requests.get(stack.facade + "schedule.json", auth=("ci", operator_token), timeout=10)
    assert (
        by_get.json()["message"]
        == "UnsupportedMethod: Expected one of [b'HEAD', b'OPTIONS', b'POST']"
    )
    assert Job.objects.count() == 1


def test_no_answer_reveals_node_credentials_or_tokens(stack, transactional_db, operator_token):
    for index, node in enumerate(stack.nodes):
        Node.objects.create(
            name=f"secret-{index}",
            url=node.url,
            state=Node.State.UP,
            username="u",
            password="n0de-Pass",
        )
    for endpoint in ("daemonstatus.json", "listprojects.json", "listjobs.json", "jobs", ""):
        body = requests.get(stack.facade + endpoint, auth=("ci", operator_token), timeout=10).text
        assert "n0de-Pass" not in body
        assert operator_token not in body
