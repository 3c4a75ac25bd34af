"""What ``crawlfleet up`` puts into a fresh platform: the crawler egg and an example task.

Both steps are idempotent: an egg built from unchanged sources is not deployed again, and the
example task is created only if absent, through the same rules as any other task.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE_TASK = "books-demo"
EXAMPLE_CRON = "*/5 * * * *"
PROJECT = "crawler"


def crawlfleet_argv(*args: str) -> list[str]:
    """The console script beside this interpreter, or the CLI module if it is not installed."""
    script = Path(sys.executable).parent / "crawlfleet"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "controlplane.cli", *args]


def sources_fingerprint(project_dir: Path) -> str:
    """A digest of the crawler's sources, to skip redeploying an unchanged project."""
    digest = hashlib.sha256()
    files = [project_dir / "scrapy.cfg", *sorted((project_dir / PROJECT).rglob("*.py"))]
    for path in files:
        if "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(str(path.relative_to(project_dir)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def deployed_unchanged(data_dir: Path, fingerprint: str) -> str | None:
    """The version deployed from these same sources, if it is still the current one."""
    from django.db import close_old_connections

    from controlplane.deploys.models import Project

    close_old_connections()
    try:
        state = json.loads((data_dir / "deployed.json").read_text())
    except (OSError, ValueError):
        return None
    project = Project.objects.filter(name=PROJECT).select_related("current_version").first()
    current = project.current_version if project else None
    if current is None or state.get("fingerprint") != fingerprint:
        return None
    return current.version if current.version == state.get("version") else None


def deploy_crawler(project_dir: Path, data_dir: Path, logs: Path, url: str, api_token: str) -> str:
    """Build the egg and deploy it with ``crawlfleet deploy``; a note for the banner."""
    from controlplane.lib.eggs import EggError, build_egg

    fingerprint = sources_fingerprint(project_dir)
    version = deployed_unchanged(data_dir, fingerprint)
    if version is not None:
        return f"{PROJECT} {version} (unchanged, not redeployed)"
    print(f"building and deploying the egg of {project_dir} ...", flush=True)
    try:
        egg = build_egg(project_dir, output_dir=data_dir / "eggs")
    except EggError as exc:
        return f"NOT DEPLOYED: egg build failed: {exc}"
    log_path = logs / "deploy.log"
    with log_path.open("a") as log:
        result = subprocess.run(
            crawlfleet_argv("deploy", str(egg.path), "--url", url, "--project", PROJECT),
            env={**os.environ, "CRAWLFLEET_TOKEN": api_token},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )
    if result.returncode == 0:
        record = {"fingerprint": fingerprint, "version": egg.version}
        (data_dir / "deployed.json").write_text(json.dumps(record) + "\n")
        return f"{PROJECT} {egg.version} on every node"
    if result.returncode == 3:
        return f"{PROJECT} {egg.version}, but some nodes failed (see {log_path})"
    return f"NOT DEPLOYED (exit {result.returncode}; see {log_path})"


def ensure_example_task(demo_url: str) -> str:
    """The books spider against the demo site every 5 minutes, unless a task of that name is
    there already; a note for the banner."""
    from django.db import close_old_connections

    from controlplane.accounts.audit import Actor
    from controlplane.deploys.models import Project
    from controlplane.refusals import Refused
    from controlplane.scheduling.editing import save_task
    from controlplane.scheduling.models import Task

    close_old_connections()
    existing = Task.objects.filter(name=EXAMPLE_TASK).first()
    if existing is not None:
        return f"{EXAMPLE_TASK} ({existing.spider}, cron {existing.cron!r})"
    if not Project.objects.filter(name=PROJECT).exists() or not demo_url:
        return "none (nothing deployed or no demo site)"
    data = {
        "name": EXAMPLE_TASK,
        "project": PROJECT,
        "spider": "books",
        "args": {"start_url": f"{demo_url}/catalogue/page-1.html"},
        "cron": EXAMPLE_CRON,
    }
    try:
        save_task(Task(), data, actor=Actor("system", "crawlfleet up", None))
    except Refused as exc:
        return f"not created: {exc.message}"
    return f"{EXAMPLE_TASK} (books against the demo site, cron {EXAMPLE_CRON!r})"
