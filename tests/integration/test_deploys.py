"""Deploys against real Scrapyd nodes: every node in one action, catch-up, rollback, deletion.

Each test checks what the nodes themselves report (``listversions.json``), not only our rows.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from controlplane.accounts.models import ApiToken
from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.deploys.removal import delete_version
from controlplane.deploys.services import DeployError, deploy_version, rollback, upload_version
from controlplane.deploys.sync import sync_node
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task
from tests.fixtures.common import REPO_ROOT, VENV_BIN, zip_bytes
from tests.fixtures.jobs import create_adhoc_run

pytestmark = [pytest.mark.scrapyd, pytest.mark.django_db]


def add_nodes(scrapyd_nodes: list) -> list[Node]:
    return [
        Node.objects.create(name=n.name, url=n.url, state=Node.State.UP, capacity=2)
        for n in scrapyd_nodes
    ]


def versions_on(node, project: str) -> list[str]:
    return node.get("listversions.json", project=project)["versions"]


ENTRY_POINTS = "[scrapy]\nsettings = broken.settings\n"


@pytest.fixture(scope="module")
def three(session_scrapyd_nodes):
    """Three nodes shared by this module; tests use distinct project names."""
    return session_scrapyd_nodes(3, max_proc=2)


def test_upload_deploys_to_every_node_in_one_action(three, failproject_egg):
    nodes = add_nodes(three)
    outcome = upload_version("fleetwide", "100", failproject_egg.data)

    assert outcome.ok, outcome.results
    assert sorted(r.node for r in outcome.results) == sorted(n.name for n in nodes)
    assert all(r.ok and "spiders" in r.message for r in outcome.results)
    version = Version.objects.get(project__name="fleetwide", version="100")
    assert version.project.current_version == version
    assert {"ok", "callback_error", "hang"} <= set(version.spiders)
    states = NodeDeployment.objects.filter(version=version).values_list("state", flat=True)
    assert sorted(states) == [NodeDeployment.State.DEPLOYED] * 3
    for node in three:
        assert versions_on(node, "fleetwide") == ["100"]

    # The same bytes again are idempotent; other bytes under a taken number are refused.
    again = upload_version("fleetwide", "100", failproject_egg.data)
    assert not again.created
    assert again.ok
    with pytest.raises(DeployError) as conflict:
        upload_version("fleetwide", "100", zip_bytes({"EGG-INFO/entry_points.txt": ENTRY_POINTS}))
    assert conflict.value.status in (409, 422)


@pytest.mark.parametrize(
    ("egg", "message"),
    [
        (b"this is not a zip file", "not a zip file"),
        (zip_bytes({"broken/__init__.py": "", "broken/settings.py": ""}), "entry_points.txt"),
        (
            zip_bytes(
                {
                    "EGG-INFO/entry_points.txt": ENTRY_POINTS,
                    "broken/__init__.py": "",
                    "broken/settings.py": "",
                    "../../evil.py": "print('pwned')",
                }
            ),
            "zip-slip",
        ),
    ],
    ids=["not-zip", "no-entry-point", "zip-slip"],
)
def test_invalid_egg_is_refused_before_anything_is_stored(three, egg, message):
    add_nodes(three)
    with pytest.raises(DeployError) as refused:
        upload_version("badegg", "1", egg)
    assert refused.value.status == 422
    assert message in refused.value.message
    assert "egg" in refused.value.fields
    assert not Project.objects.filter(name="badegg").exists()
    assert not NodeDeployment.objects.exists()
    for node in three:
        assert "badegg" not in node.get("listprojects.json")["projects"]


def test_egg_every_node_rejects_is_cleaned_off_the_nodes(three):
    add_nodes(three)
    egg = zip_bytes(
        {
            "EGG-INFO/entry_points.txt": ENTRY_POINTS,
            "EGG-INFO/PKG-INFO": "Metadata-Version: 1.1\nName: broken\nVersion: 7\n",
            "broken/__init__.py": "",
            "broken/settings.py": "import crawlfleet_no_such_module\n",
        }
    )
    with pytest.raises(DeployError) as rejected:
        upload_version("rejected", "7", egg)
    error = rejected.value
    assert error.status == 422
    assert error.code == "rejected"
    assert len(error.results) == 3
    assert all("No module named 'crawlfleet_no_such_module'" in r.message for r in error.results)
    assert not Project.objects.filter(name="rejected").exists()
    assert not Version.objects.exists()
    for node in three:  # Scrapyd stored the egg while answering "error"; it is gone again
        assert versions_on(node, "rejected") == []


def test_rollback_moves_the_pointer_and_the_next_run_uses_that_version(three, failproject_egg):
    nodes = add_nodes(three)
    upload_version("rolling", "200", failproject_egg.data)
    upload_version("rolling", "300", failproject_egg.data)
    project = Project.objects.get(name="rolling")
    assert project.current_version.version == "300"
    old = project.versions.get(version="200")
    # One node lost the old version: rollback puts it back before moving the pointer.
    three[0].post("delversion.json", data={"project": "rolling", "version": "200"})

    outcome = rollback(project, old)

    assert outcome.ok
    project.refresh_from_db()
    assert project.current_version == old
    for node in three:
        assert sorted(versions_on(node, "rolling")) == ["200", "300"]
    job = create_adhoc_run(project, "ok")
    assert job.version == old

    # Dispatch it and read the version the node actually ran (pinned, never "latest").
    from controlplane.jobs.dispatch import dispatch

    assert dispatch() == 1
    job.refresh_from_db()
    scrapyd = next(n for n in three if n.name == job.node.name)
    record = scrapyd.job_exit(job.scrapyd_job_id)
    assert record["version"] == "200"
    assert {n.pk for n in nodes} >= {job.node_id}


def test_delete_removes_from_every_node_and_refuses_what_is_in_use(three, failproject_egg):
    add_nodes(three)
    upload_version("pruned", "1", failproject_egg.data)
    upload_version("pruned", "2", failproject_egg.data)
    upload_version("pruned", "3", failproject_egg.data)
    project = Project.objects.get(name="pruned")
    current = project.versions.get(version="3")
    pinned = project.versions.get(version="2")
    Task.objects.create(
        name="pins-2", project=project, spider="ok", version=pinned, cron="0 * * * *"
    )

    with pytest.raises(DeployError, match="current version") as refused:
        delete_version(current)
    assert refused.value.status == 409
    with pytest.raises(DeployError, match="pinned by task"):
        delete_version(pinned)

    outcome = delete_version(project.versions.get(version="1"))
    assert outcome.ok
    assert not project.versions.filter(version="1").exists()
    for node in three:
        assert sorted(versions_on(node, "pruned")) == ["2", "3"]


def test_deleting_a_version_with_job_history_keeps_a_tombstone(three, failproject_egg):
    add_nodes(three)
    upload_version("history", "1", failproject_egg.data)
    upload_version("history", "2", failproject_egg.data)
    project = Project.objects.get(name="history")
    old = project.versions.get(version="1")
    job = create_adhoc_run(project, "ok", version=old)
    with pytest.raises(DeployError, match="active job"):
        delete_version(old)
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)

    delete_version(old)

    old.refresh_from_db()
    assert old.deleted_at is not None
    assert bytes(old.egg) == b""
    assert project.latest_version().version == "2"
    for node in three:
        assert versions_on(node, "history") == ["2"]
    with pytest.raises(DeployError, match="never reused"):
        upload_version("history", "1", failproject_egg.data)


def test_new_and_emptied_nodes_catch_up_through_sync(scrapyd_nodes, failproject_egg):
    first, second = scrapyd_nodes(2, max_proc=1)
    first_row, second_row = add_nodes([first, second])
    second.stop()  # down, but not noticed yet: the deploy reports it
    outcome = upload_version("catchup", "10", failproject_egg.data)
    project = Project.objects.get(name="catchup")
    upload_version("catchup", "11", failproject_egg.data)
    pinned = project.versions.get(version="10")
    Task.objects.create(
        name="pinned-10", project=project, spider="ok", version=pinned, cron="* * * * *"
    )

    failed = [r for r in outcome.results if not r.ok]
    assert [r.node for r in failed] == [second.name]
    assert failed[0].unreachable

    # It comes back: everything current or pinned is pushed, judged by listversions.json.
    second.start()
    result = sync_node(second_row)
    assert result.ok, result
    assert sorted(result.deployed) == ["catchup 10", "catchup 11"]
    assert sorted(versions_on(second, "catchup")) == ["10", "11"]

    # A node restarted with an empty eggs dir: our records say deployed, the node says no.
    first.stop()
    shutil.rmtree(first.dir / "eggs")
    first.start()
    assert versions_on(first, "catchup") == []
    result = sync_node(first_row)
    assert result.ok
    assert sorted(result.missing) == ["catchup 10", "catchup 11"]
    assert sorted(result.deployed) == ["catchup 10", "catchup 11"]
    assert sorted(versions_on(first, "catchup")) == ["10", "11"]
    assert (
        NodeDeployment.objects.filter(node=first_row, state=NodeDeployment.State.DEPLOYED).count()
        == 2
    )

    # A third node joining late gets the same.
    [third] = scrapyd_nodes(1, max_proc=1)
    [third_row] = add_nodes([third])
    assert sorted(sync_node(third_row).deployed) == ["catchup 10", "catchup 11"]
    # And deploy_version to selected nodes only touches those.
    results = deploy_version(pinned, [third_row])
    assert [r.node for r in results] == [third.name]


def test_deploy_cli_uploads_and_reports_every_node(
    cp_web, cp_env, three, failproject_egg, tmp_path
):
    """``crawlfleet deploy``: builds (or takes) an egg, uploads it, one line per node."""
    add_nodes(three)
    secret = ApiToken.create("ci", "operator")[1]

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "crawlfleet"), "deploy", *argv, "--url", cp_web],
            env={**cp_env, "CRAWLFLEET_TOKEN": secret},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    built = cli("--project-dir", "tests/failproject", "--version", "41", "--project", "clitest")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "clitest 41: deployed to 3 of 3 nodes" in built.stdout
    for node in three:
        assert f"ok     {node.name}:" in built.stdout
        assert versions_on(node, "clitest") == ["41"]
    assert not (REPO_ROOT / "tests" / "failproject" / "build").exists()

    given = cli(str(failproject_egg.path), "--project", "clitest", "--version", "42")
    assert given.returncode == 0, given.stdout + given.stderr
    assert Project.objects.get(name="clitest").current_version.version == "42"

    junk = tmp_path / "junk.egg"
    junk.write_bytes(b"not a zip")
    refused = cli(str(junk), "--project", "clitest", "--version", "43")
    assert refused.returncode == 1
    assert "not a zip file" in refused.stderr

    broken = tmp_path / "broken.egg"
    broken.write_bytes(
        zip_bytes(
            {
                "EGG-INFO/entry_points.txt": ENTRY_POINTS,
                "EGG-INFO/PKG-INFO": "Metadata-Version: 1.1\nName: broken\nVersion: 44\n",
                "broken/__init__.py": "",
                "broken/settings.py": "raise RuntimeError('cannot start')\n",
            }
        )
    )
    rejected = cli(str(broken), "--project", "clitest", "--version", "44")
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "every node rejected" in rejected.stderr
    assert "FAILED" in rejected.stdout
    assert rejected.stdout.count("RuntimeError: cannot start") == 3
    for node in three:
        assert sorted(versions_on(node, "clitest")) == ["41", "42"]

    wrong = subprocess.run(
        [str(VENV_BIN / "crawlfleet"), "deploy", str(failproject_egg.path), "--url", cp_web],
        env={**cp_env, "CRAWLFLEET_TOKEN": "cf_wrong"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert wrong.returncode == 1
    assert "HTTP 401" in wrong.stderr
