"""``crawlfleet node``: a real Scrapyd that records real process exits and registers itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scrapydnode.config import NodeConfig, NodeConfigError
from scrapydnode.exits import ExitStore
from scrapydnode.registration import Registrar, backoff
from scrapydnode.server import registration_payload
from tests.fixtures.common import VENV_BIN
from tests.fixtures.scrapyd import HANG_READY

# --- units -----------------------------------------------------------------------------------


def test_rendered_config_is_complete_and_escaped(tmp_path):
    config = NodeConfig(port=6800, dir=tmp_path / "50%", max_proc=3, poll_interval=0.5).validate()
    text = config.render()
    assert "max_proc          = 3" in text
    assert "poll_interval     = 0.5" in text
    assert "jobstorage        = scrapyd.jobstorage.SqliteJobStorage" in text
    assert "jobexits.json     = scrapydnode.webservice.JobExits" in text
    assert f"eggs_dir          = {tmp_path}/50%%/eggs" in text  # configparser interpolation
    config.write()
    assert (config.dir / "scrapyd.conf").read_text() == text
    assert (config.dir / "scrapy.cfg").is_file()


def test_deploy_template_is_the_rendered_one(repo_root):
    template = repo_root / "deploy" / "scrapyd" / "scrapyd.conf.template"
    packaged = repo_root / "scrapydnode" / "templates" / "scrapyd.conf"
    assert template.read_text() == packaged.read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 0}, "out of range"),
        ({"port": 70000}, "out of range"),
        ({"max_proc": 0}, "--max-proc must be at least 1"),
        ({"bind": "not a host!"}, "neither an IP address nor a host name"),
        ({"name": "bad name"}, "--name 'bad name' is invalid"),
        ({"tags": ["ok", "no spaces"]}, "tag 'no spaces' is invalid"),
        ({"register": "ftp://cp", "token": "t"}, "must be an http(s) URL"),
        ({"register": "http://cp:8000"}, "--register and --token go together"),
        ({"register": "http://cp:8000", "token": "a b"}, "without whitespace"),
        ({"poll_interval": 0}, "--poll-interval"),
    ],
)
def test_invalid_options_are_named(tmp_path, options, message):
    config = NodeConfig(**{"port": 6800, "dir": tmp_path / "node", **options})
    with pytest.raises(NodeConfigError) as info:
        config.validate()
    assert message in str(info.value)


def test_registration_payload_carries_basic_auth_only_when_enabled(tmp_path, monkeypatch):
    config = NodeConfig(port=6800, dir=tmp_path, name="n1", tags=["eu"], max_proc=3).validate()
    monkeypatch.delenv("SCRAPYD_USERNAME", raising=False)
    monkeypatch.delenv("SCRAPYD_PASSWORD", raising=False)
    assert registration_payload(config) == {
        "name": "n1",
        "url": "http://127.0.0.1:6800",
        "max_proc": 3,
        "tags": ["eu"],
        "scrapyd_version": "1.6.0",
    }
    monkeypatch.setenv("SCRAPYD_USERNAME", "crawl")
    monkeypatch.setenv("SCRAPYD_PASSWORD", "pw")
    assert registration_payload(config)["password"] == "pw"


def test_exit_store_keeps_the_last_records_and_spots_lost_jobs(tmp_path):
    first = ExitStore(tmp_path / "exits.db", keep=3)
    for n in range(5):
        row = first.started(job=f"j{n}", project="p", spider="s", version="1", pid=None)
        if n != 4:
            first.ended(
                row,
                exit_code=n % 2,
                signal=None,
                job=f"j{n}",
                project="p",
                spider="s",
                version="1",
                pid=None,
            )
    assert [r["job"] for r in first.query()] == ["j4", "j3", "j2"]
    assert first.query(job="j4")[0]["state"] == "running"
    first.close()
    second = ExitStore(tmp_path / "exits.db", keep=3)  # a restarted node
    [lost] = second.query(job="j4")
    assert lost["state"] == "lost"
    assert lost["pid_alive"] is False
    assert second.query(job="j3")[0]["exit_code"] == 1


def test_registrar_backs_off_and_keeps_going():
    calls: list[dict] = []
    done = threading.Event()

    def flaky_post(url: str, token: str, payload: dict) -> int:
        calls.append(payload)
        if len(calls) <= 2:
            raise OSError("connection refused")
        done.set()
        return 200

    registrar = Registrar("http://cp/api", "t", lambda: {"n": 1}, interval=0.1, poster=flaky_post)
    registrar.start()
    assert done.wait(10)
    registrar.stop()
    assert registrar.failures == 2
    assert 0.8 <= backoff(1, 15) <= 1
    assert backoff(20, 15) <= 60


# --- command line ----------------------------------------------------------------------------


def _node_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "crawlfleet"), "node", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_node_code_never_imports_django():
    code = (
        "import sys\n"
        "from controlplane import cli\n"
        "cli.build_parser('node')\n"
        "import scrapydnode.server, scrapydnode.launcher, scrapydnode.runner\n"
        "import scrapydnode.webservice, controlplane.lib.eggs\n"
        "assert not [m for m in sys.modules if m.startswith('django')], 'django imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_bad_cli_input_fails_clearly(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    cases = [
        (["--port", "70000", "--dir", str(tmp_path / "n")], "--port 70000 is out of range"),
        (["--port", "6800", "--dir", str(a_file)], "exists and is not a directory"),
        (
            [
                "--port",
                "6800",
                "--dir",
                str(tmp_path / "n"),
                "--register",
                "cp:8000",
                "--token",
                "t",
            ],
            "must be an http(s) URL",
        ),
        (
            ["--port", "6800", "--dir", str(tmp_path / "n"), "--register", "http://cp:8000"],
            "--register needs --token",
        ),
    ]
    for args, message in cases:
        proc = _node_cli(*args, env={"CRAWLFLEET_NODE_TOKEN": ""})
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("crawlfleet node: error: "), proc.stderr
        assert message in proc.stderr, proc.stderr
    proc = _node_cli("--port", "x", "--dir", str(tmp_path))
    assert proc.returncode == 2
    assert "invalid int value" in proc.stderr


@pytest.mark.scrapyd
def test_port_in_use_is_a_clear_error(scrapyd_node, tmp_path):
    proc = _node_cli("--port", str(scrapyd_node.port), "--dir", str(tmp_path / "other"))
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{scrapyd_node.port}" in proc.stderr


# --- a running node --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fail_node(shared_scrapyd_node, failproject_egg):
    shared_scrapyd_node.deploy(failproject_egg)
    return shared_scrapyd_node


@pytest.mark.scrapyd
def test_node_answers_with_its_config(shared_scrapyd_node):
    status = shared_scrapyd_node.get("daemonstatus.json")
    assert status["node_name"] == shared_scrapyd_node.name
    conf = (shared_scrapyd_node.dir / "scrapyd.conf").read_text()
    assert "max_proc          = 4" in conf
    assert "scrapydnode.launcher.ExitRecordingLauncher" in conf
    answer = shared_scrapyd_node.request("GET", "jobexits.json?limit=0", expect="error")
    assert "limit must be between" in answer["message"]


@pytest.mark.scrapyd
def test_job_exits_tell_success_failure_and_kill_apart(fail_node, failproject_egg):
    version = failproject_egg.version
    ok = fail_node.schedule("failproject", "ok", version=version, count="2")
    init_error = fail_node.schedule("failproject", "init_error", version=version)
    callback_error = fail_node.schedule("failproject", "callback_error", version=version)
    sleepy = fail_node.schedule("failproject", "sleepy", version=version, seconds="120")

    pid = fail_node.running_job(sleepy)["pid"]
    os.kill(pid, signal.SIGKILL)

    killed = fail_node.job_exit(sleepy)
    assert killed["state"] == "killed"
    assert killed["signal"] == signal.SIGKILL
    assert killed["signal_name"] == "SIGKILL"
    assert killed["exit_code"] is None
    assert killed["pid"] == pid

    exited = fail_node.job_exit(ok)
    assert (exited["state"], exited["exit_code"], exited["signal"]) == ("exited", 0, None)
    assert exited["spider"] == "ok"
    assert exited["version"] == version
    assert fail_node.job_exit(init_error)["exit_code"] == 1
    assert fail_node.job_exit(callback_error)["exit_code"] == 0

    ok_log = fail_node.job_log("failproject", "ok", ok)
    assert "'finish_reason': 'finished'" in ok_log
    assert "'item_scraped_count': 2" in ok_log
    error_log = fail_node.job_log("failproject", "callback_error", callback_error)
    assert "'log_count/ERROR': 1" in error_log
    assert "finish_reason" not in fail_node.job_log("failproject", "init_error", init_error)
    assert fail_node.job_state(sleepy) == "finished"  # all Scrapyd itself can say


@pytest.mark.scrapyd
def test_cancelled_hanging_job_shuts_down_gracefully(fail_node, failproject_egg):
    job = fail_node.schedule("failproject", "hang", version=failproject_egg.version)
    fail_node.running_job(job)
    fail_node.wait_for_log("failproject", "hang", job, HANG_READY)
    assert fail_node.post("cancel.json", {"project": "failproject", "job": job})["prevstate"] == (
        "running"
    )
    record = fail_node.job_exit(job, timeout=30)
    assert (record["state"], record["exit_code"]) == ("exited", 0)
    # The node serves the log through its web server, which may lag the exit by a moment.
    fail_node.wait_for_log("failproject", "hang", job, "'finish_reason': 'shutdown'", timeout=15)


@pytest.mark.scrapyd
def test_killed_node_restarts_and_reports_the_job_it_lost(scrapyd_node, failproject_egg):
    scrapyd_node.deploy(failproject_egg)
    job = scrapyd_node.schedule(
        "failproject", "sleepy", version=failproject_egg.version, seconds="120"
    )
    pid = scrapyd_node.running_job(job)["pid"]
    before = scrapyd_node.get("jobexits.json")["boot_id"]

    scrapyd_node.kill()
    os.kill(pid, 0)  # the crawl outlives its Scrapyd
    scrapyd_node.restart()

    assert scrapyd_node.job_state(job) is None  # Scrapyd forgot it
    [record] = scrapyd_node.jobexits(job)
    assert record["state"] == "lost"
    assert record["pid_alive"] is True
    assert record["boot_id"] == before != scrapyd_node.get("jobexits.json")["boot_id"]
    os.kill(pid, signal.SIGKILL)
    scrapyd_node.wait_for(
        lambda: not scrapyd_node.jobexits(job)[0]["pid_alive"], timeout=10, what="orphan gone"
    )


@pytest.mark.scrapyd
def test_runner_puts_the_deployed_egg_ahead_of_the_installed_package(fail_node, crawler_egg):
    """The venv has ``crawler`` installed (editable); a job must still run the deployed egg."""
    fail_node.deploy(crawler_egg)
    code = (
        "from scrapydnode.runner import project_environment\n"
        "with project_environment('crawler'):\n"
        "    import crawler, os\n"
        "    print(crawler.__file__, os.environ['SCRAPY_SETTINGS_MODULE'])\n"
    )
    env = {**os.environ, "SCRAPYD_EGG_VERSION": crawler_egg.version}
    env["SCRAPY_SETTINGS_MODULE"] = "somewhere.else"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=fail_node.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    path, settings = proc.stdout.split()
    assert Path(path).is_relative_to(fail_node.dir / "eggs" / "crawler"), path
    assert settings == "crawler.settings"
