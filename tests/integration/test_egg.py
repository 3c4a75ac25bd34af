"""The crawler egg: what it contains, that real Scrapyd runs it, and upload validation."""

from __future__ import annotations

import csv
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from controlplane.lib.eggs import EggBuildError, InvalidEgg, inspect_egg, validate_version
from tests.fixtures.common import REPO_ROOT, VENV_BIN, zip_bytes


def _litter() -> set[str]:
    """Build leftovers a careless egg build would leave in the repository."""
    found = set()
    for directory in (REPO_ROOT, REPO_ROOT / "crawler"):
        for path in directory.iterdir():
            if path.name == "build" or path.name.endswith(".egg-info"):
                found.add(str(path))
    return found


SCRAPY_ENTRY = "[scrapy]\nsettings = demo.settings\n"


def test_crawler_egg_holds_only_the_crawler_package(crawler_egg):
    names = zipfile.ZipFile(crawler_egg.path).namelist()
    assert {n.split("/")[0] for n in names} == {"crawler", "EGG-INFO"}
    assert "crawler/settings.py" in names
    assert "crawler/spiders/books.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("controlplane", "tests"))]
    info = inspect_egg(crawler_egg.data)
    assert info.settings_module == "crawler.settings"
    assert info.packages == ("crawler",)
    assert info.entry_points == {"scrapy": {"settings": "crawler.settings"}}
    assert re.fullmatch(r"\d{14}", crawler_egg.version)
    assert info.version == crawler_egg.version


def test_cli_build_prints_the_path_and_leaves_no_litter(tmp_path):
    before = _litter()
    proc = subprocess.run(
        [
            str(VENV_BIN / "crawlfleet"),
            "egg",
            "build",
            "--version",
            "42",
            "--output",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    egg = Path(proc.stdout.strip())
    assert egg.parent == tmp_path
    assert egg.is_file()
    assert inspect_egg(egg.read_bytes()).version == "42"
    assert _litter() == before


def test_versions_are_numeric_and_sort_as_numbers():
    assert validate_version("20260101000000") == "20260101000000"
    for bad in ("r10", "1.0", "", "12 3"):
        with pytest.raises(EggBuildError, match="digits only"):
            validate_version(bad)
    proc = subprocess.run(
        [str(VENV_BIN / "crawlfleet"), "egg", "build", "--version", "r10"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid egg version 'r10'" in proc.stderr


def test_inspect_egg_rejects_what_is_not_azip_bytes():
    with pytest.raises(InvalidEgg, match="not a zip file"):
        inspect_egg(b"print('hello')")
    with pytest.raises(InvalidEgg, match="empty"):
        inspect_egg(b"")


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil.py", "zip-slip"),
        ("demo/../../evil.py", "zip-slip"),
        ("/etc/cron.d/evil", "absolute path"),
        ("C:/evil.py", "absolute path"),
        ("..\\evil.py", "backslashes"),
    ],
)
def test_inspect_egg_rejects_path_traversal(member, message):
    data = zip_bytes(
        {
            "EGG-INFO/entry_points.txt": SCRAPY_ENTRY,
            "demo/__init__.py": "",
            "demo/settings.py": "",
            member: "import os",
        }
    )
    with pytest.raises(InvalidEgg, match=message):
        inspect_egg(data)


def test_inspect_egg_requires_the_scrapy_settings_entry_point():
    with pytest.raises(InvalidEgg, match=r"no EGG-INFO/entry_points\.txt"):
        inspect_egg(zip_bytes({"demo/__init__.py": "", "demo/settings.py": ""}))
    with pytest.raises(InvalidEgg, match="no Scrapy settings entry point"):
        inspect_egg(
            zip_bytes(
                {"EGG-INFO/entry_points.txt": "[console_scripts]\nx = y:z\n", "demo/a.py": ""}
            )
        )
    with pytest.raises(InvalidEgg, match="not in the egg"):
        inspect_egg(zip_bytes({"EGG-INFO/entry_points.txt": SCRAPY_ENTRY, "other/__init__.py": ""}))


def test_inspect_egg_enforces_size_limits():
    data = zip_bytes({"EGG-INFO/entry_points.txt": SCRAPY_ENTRY, "demo/settings.py": "x" * 1000})
    with pytest.raises(InvalidEgg, match="more than the limit"):
        inspect_egg(data, max_size=100)
    with pytest.raises(InvalidEgg, match="unpacks to more than"):
        inspect_egg(data, max_uncompressed=500)
    info = inspect_egg(data)
    assert info.settings_module == "demo.settings"
    assert info.packages == ("demo",)


@pytest.fixture(scope="module")
def crawler_node(shared_scrapyd_node, crawler_egg):
    """The session node with the crawler egg deployed."""
    answer = shared_scrapyd_node.deploy(crawler_egg)
    assert answer["project"] == "crawler"
    return shared_scrapyd_node


@pytest.mark.scrapyd
def test_deployed_egg_lists_every_spider(crawler_node, crawler_egg):
    listed = crawler_node.get("listspiders.json", project="crawler", _version=crawler_egg.version)
    local = subprocess.run(
        [str(VENV_BIN / "scrapy"), "list"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert sorted(listed["spiders"]) == sorted(local.stdout.split())
    assert "books" in listed["spiders"]
    versions = crawler_node.get("listversions.json", project="crawler")["versions"]
    assert crawler_egg.version in versions


@pytest.mark.scrapyd
def test_books_job_runs_to_completion_on_the_node(crawler_node, crawler_egg, demo_site, tmp_path):
    csv_dir = tmp_path / "csv"
    job = crawler_node.schedule(
        "crawler",
        "books",
        version=crawler_egg.version,
        settings={"CRAWLFLEET_CSV_DIR": str(csv_dir)},
        start_url=f"{demo_site.base_url}/catalogue/page-1.html",
    )
    finished = crawler_node.finished_job(job, timeout=60)
    assert finished["log_url"] == f"/logs/crawler/books/{job}.log"
    log = crawler_node.job_log("crawler", "books", job)
    assert "'finish_reason': 'finished'" in log
    assert "'item_scraped_count': 200" in log
    assert crawler_node.job_exit(job)["exit_code"] == 0
    [path] = sorted((csv_dir / "books").glob("*.csv"))
    with path.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 200
