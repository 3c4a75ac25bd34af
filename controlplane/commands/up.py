"""``crawlfleet up``: the whole platform on one machine, with embedded defaults.

Everything lives in the data dir (``./var``): the SQLite database, the secret key, the admin
login and API tokens (files of mode 0600), one directory per Scrapyd node, built eggs, and one
log file per process under ``logs/``. The steps, each idempotent so a second ``up`` reuses what
the first one made:

1. migrations; an admin user (``CRAWLFLEET_ADMIN_USER``/``CRAWLFLEET_ADMIN_PASSWORD``, or one
   generated on the first start and kept in ``admin-login.json``); a ``node`` token for the local
   nodes and an ``operator`` token (``api-token``) for deploys and scripts;
2. the demo bookshop, ``crawlfleet web``, ``crawlfleet scheduler``, ``crawlfleet poller`` and N
   ``crawlfleet node --register`` processes, each in its own process group;
3. once the nodes have registered: the crawler egg is built and deployed through the REST API
   (skipped when the crawler's sources have not changed since the last deploy), and an example
   cron task (the books spider against the demo site, every 5 minutes) is created if absent.

Supervision is ``controlplane.commands.supervisor``'s: a child that exits is restarted, one that
keeps exiting (a crash loop) stops everything with status 1, and Ctrl-C (SIGINT) or SIGTERM stops
every process group, the nodes' spiders included, with status 0, also when ``up`` was started
with SIGINT ignored (as a script's ``crawlfleet up &`` starts it).

An inherited ``CRAWLFLEET_DATABASE_URL`` is honoured (``up`` against PostgreSQL works too).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from controlplane.commands.supervisor import (
    Child,
    Shutdown,
    Supervisor,
    stop_signals_raise_shutdown,
)
from controlplane.lib.procutil import ProcessFailed, free_port, port_open

EXAMPLE_TASK = "books-demo"
EXAMPLE_CRON = "*/5 * * * *"
PROJECT = "crawler"
REGISTER_TIMEOUT = 90.0


class UpError(Exception):
    """The platform could not be brought up; the message says why and where to look."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2, help="local Scrapyd nodes (default 2)")
    parser.add_argument("--port", type=int, default=8000, help="control plane port (default 8000)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CRAWLFLEET_DATA_DIR", "var")),
        help="where everything is kept (default ./var, or CRAWLFLEET_DATA_DIR)",
    )
    parser.add_argument(
        "--node-port",
        type=int,
        default=6800,
        help="first node's port; node i gets PORT+i-1 (0: any free ports). Default 6800",
    )
    parser.add_argument(
        "--max-proc", type=int, default=None, help="parallel crawls per node (default: CPUs)"
    )
    parser.add_argument(
        "--demo-port",
        type=int,
        default=8800,
        help="port of the demo bookshop the example task crawls (default 8800; 0: none)",
    )
    parser.add_argument(
        "--scrapyd-port",
        type=int,
        default=6900,
        help="port of the fleet's Scrapyd-compatible API at its root, for ScrapydWeb and the "
        "like (default 6900; 0: only under /scrapyd/)",
    )
    parser.add_argument(
        "--web-workers", type=int, default=2, help="gunicorn workers of the web server (default 2)"
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="Scrapy project to deploy (default: the one `crawler` was installed from)",
    )


def default_project_dir() -> Path:
    """The directory with scrapy.cfg next to the ``crawler`` package, else the current one."""
    import crawler

    candidate = Path(crawler.__file__).resolve().parent.parent
    return candidate if (candidate / "scrapy.cfg").is_file() else Path.cwd()


def crawlfleet_argv(*args: str) -> list[str]:
    """The console script beside this interpreter, or the CLI module if it is not installed."""
    script = Path(sys.executable).parent / "crawlfleet"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "controlplane.cli", *args]


class Platform:
    """The platform's bootstrap: everything ``up`` prepares and starts, once, in order."""

    def __init__(self, args: argparse.Namespace, supervisor: Supervisor) -> None:
        self.args = args
        self.supervisor = supervisor
        self.data_dir: Path = args.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.url = f"http://127.0.0.1:{args.port}"
        self.node_names = [f"local-{i}" for i in range(1, args.nodes + 1)]
        self.demo_url = f"http://127.0.0.1:{args.demo_port}" if args.demo_port else ""
        self.login = ""
        self.deploy_note = ""
        self.task_note = ""
        self.lock: IO[str] | None = None
        self.ports: list[int] = []

    # --- preparation ---------------------------------------------------------------------
    def configure_environment(self) -> None:
        """Every child and this process read the same settings from the environment."""
        os.environ["CRAWLFLEET_DATA_DIR"] = str(self.data_dir)
        os.environ["CRAWLFLEET_PUBLIC_URL"] = self.url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        # One platform per data dir: two would share nodes' directories and the database.
        # The descriptor is not inherited, so the lock ends with this process.
        self.lock = (self.data_dir / "up.lock").open("a")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpError(f"another `crawlfleet up` is running on {self.data_dir}") from None

    def node_ports(self) -> list[int]:
        if self.args.node_port == 0:
            return [free_port() for _ in self.node_names]
        return [self.args.node_port + i for i in range(len(self.node_names))]

    def check_ports(self, ports: list[int]) -> None:
        busy = [p for p in ports if port_open("127.0.0.1", p)]
        if busy:
            raise UpError(
                f"port(s) {', '.join(map(str, busy))} already in use (another `crawlfleet up`?); "
                "choose others with --port, --node-port, --demo-port or --scrapyd-port"
            )

    def prepare_database(self) -> tuple[str, str]:
        """Migrations, the admin login and the two local tokens; returns (node, api) tokens."""
        from controlplane.django_setup import setup

        setup()
        from django.db import connections

        from controlplane.commands import bootstrap

        print("applying migrations ...", flush=True)
        bootstrap.migrate(verbosity=0)
        self.login = bootstrap.local_admin_login(self.data_dir / "admin-login.json")
        node_token = bootstrap.local_token(self.data_dir / "node-token", "local-nodes", "node")
        api_token = bootstrap.local_token(self.data_dir / "api-token", "local-operator", "operator")
        connections.close_all()
        return node_token, api_token

    # --- children ----------------------------------------------------------------------
    def add(self, name: str, argv: list[str], port: int | None = None, **env: str) -> Child:
        child = Child(name, argv, {**os.environ, **env}, self.logs / f"{name}.log", port)
        return self.supervisor.start(child)

    def wait_port(self, child: Child, port: int, timeout: float = 60.0) -> None:
        if child.process is None:
            raise UpError(f"{child.name} was never started")
        try:
            child.process.wait_for_port(port, timeout=timeout)
        except ProcessFailed as exc:
            raise UpError(f"{child.name} did not start; see {child.log_path}\n{exc}") from None

    def choose_ports(self) -> None:
        """Pick the nodes' ports and fail early if any port is taken."""
        self.ports = self.node_ports()
        extra = [self.args.demo_port] if self.demo_url else []
        extra += [self.args.scrapyd_port] if self.args.scrapyd_port else []
        self.check_ports([self.args.port, *self.ports, *extra])

    def start_processes(self, node_token: str) -> None:
        node_ports = self.ports
        if self.demo_url:
            demo = self.add(
                "demosite",
                [sys.executable, "-m", "demo.bookshop", "--port", str(self.args.demo_port)],
                port=self.args.demo_port,
                # The bookshop is demo tooling in the repository, not part of the package.
                PYTHONPATH=str((self.args.project_dir or default_project_dir()).resolve()),
            )
            self.wait_port(demo, self.args.demo_port, timeout=20)
        web = self.add(
            "web",
            crawlfleet_argv(
                "web",
                "--no-migrate",
                "--bind",
                f"127.0.0.1:{self.args.port}",
                "--workers",
                str(self.args.web_workers),
                *(
                    ["--scrapyd-bind", f"127.0.0.1:{self.args.scrapyd_port}"]
                    if self.args.scrapyd_port
                    else []
                ),
            ),
            port=self.args.port,
        )
        self.add("scheduler", crawlfleet_argv("scheduler"))
        self.add("poller", crawlfleet_argv("poller"))
        self.wait_port(web, self.args.port)
        for name, port in zip(self.node_names, node_ports, strict=True):
            node_dir = self.data_dir / "nodes" / name
            argv = ["node", "--port", str(port), "--dir", str(node_dir), "--name", name]
            argv += ["--register", self.url]
            if self.args.max_proc:
                argv += ["--max-proc", str(self.args.max_proc)]
            # The token goes through the environment, never the command line (ps shows that).
            self.add(name, crawlfleet_argv(*argv), port=port, CRAWLFLEET_NODE_TOKEN=node_token)

    def wait_for_nodes(self) -> None:
        """Until every local node has registered and answered its health check."""
        from django.db import close_old_connections

        from controlplane.nodes.models import Node

        deadline = time.monotonic() + REGISTER_TIMEOUT
        up_states = [Node.State.UP, Node.State.DEGRADED]
        while True:
            close_old_connections()
            ready = set(
                Node.objects.filter(name__in=self.node_names, state__in=up_states).values_list(
                    "name", flat=True
                )
            )
            if len(ready) == len(self.node_names):
                return
            self.check_children_during_startup()
            if time.monotonic() > deadline:
                missing = sorted(set(self.node_names) - ready)
                raise UpError(
                    f"node(s) {', '.join(missing)} did not register in {REGISTER_TIMEOUT:.0f}s; "
                    f"see {self.logs}/<node>.log and {self.logs}/web.log"
                )
            time.sleep(0.3)

    def check_children_during_startup(self) -> None:
        child = self.supervisor.first_exited()
        if child is not None:
            raise UpError(
                f"{child.name} exited during start-up; see {child.log_path}\n{child.log_tail()}"
            )

    # --- deploy and the example task -------------------------------------------------------
    def sources_fingerprint(self, project_dir: Path) -> str:
        """A digest of the crawler's sources, to skip redeploying an unchanged project."""
        digest = hashlib.sha256()
        files = [project_dir / "scrapy.cfg", *sorted((project_dir / PROJECT).rglob("*.py"))]
        for path in files:
            if "__pycache__" in path.parts or not path.is_file():
                continue
            digest.update(str(path.relative_to(project_dir)).encode() + b"\0")
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def deployed_unchanged(self, fingerprint: str) -> str | None:
        """The version deployed from these same sources, if it is still the current one."""
        from django.db import close_old_connections

        from controlplane.deploys.models import Project

        close_old_connections()
        try:
            state = json.loads((self.data_dir / "deployed.json").read_text())
        except (OSError, ValueError):
            return None
        project = Project.objects.filter(name=PROJECT).select_related("current_version").first()
        current = project.current_version if project else None
        if current is None or state.get("fingerprint") != fingerprint:
            return None
        return current.version if current.version == state.get("version") else None

    def deploy(self, api_token: str) -> None:
        from controlplane.lib.eggs import EggError, build_egg

        project_dir = (self.args.project_dir or default_project_dir()).resolve()
        fingerprint = self.sources_fingerprint(project_dir)
        version = self.deployed_unchanged(fingerprint)
        if version is not None:
            self.deploy_note = f"{PROJECT} {version} (unchanged, not redeployed)"
            return
        print(f"building and deploying the egg of {project_dir} ...", flush=True)
        try:
            egg = build_egg(project_dir, output_dir=self.data_dir / "eggs")
        except EggError as exc:
            self.deploy_note = f"NOT DEPLOYED: egg build failed: {exc}"
            return
        log_path = self.logs / "deploy.log"
        with log_path.open("a") as log:
            result = subprocess.run(
                crawlfleet_argv("deploy", str(egg.path), "--url", self.url, "--project", PROJECT),
                env={**os.environ, "CRAWLFLEET_TOKEN": api_token},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=300,
                check=False,
            )
        if result.returncode == 0:
            self.deploy_note = f"{PROJECT} {egg.version} on every node"
            record = {"fingerprint": fingerprint, "version": egg.version}
            (self.data_dir / "deployed.json").write_text(json.dumps(record) + "\n")
        elif result.returncode == 3:
            self.deploy_note = f"{PROJECT} {egg.version}, but some nodes failed (see {log_path})"
        else:
            self.deploy_note = f"NOT DEPLOYED (exit {result.returncode}; see {log_path})"

    def ensure_example_task(self) -> None:
        from django.core.exceptions import ValidationError
        from django.db import close_old_connections

        from controlplane.deploys.models import Project
        from controlplane.scheduling.models import Task

        close_old_connections()
        existing = Task.objects.filter(name=EXAMPLE_TASK).first()
        if existing is not None:
            self.task_note = f"{EXAMPLE_TASK} ({existing.spider}, cron {existing.cron!r})"
            return
        project = Project.objects.filter(name=PROJECT).first()
        if project is None or not self.demo_url:
            self.task_note = "none (nothing deployed or no demo site)"
            return
        task = Task(
            name=EXAMPLE_TASK,
            project=project,
            spider="books",
            args={"start_url": f"{self.demo_url}/catalogue/page-1.html"},
            cron=EXAMPLE_CRON,
        )
        try:
            task.full_clean()
        except ValidationError as exc:
            self.task_note = f"not created: {exc}"
            return
        task.save()
        self.task_note = f"{EXAMPLE_TASK} (books against the demo site, cron {EXAMPLE_CRON!r})"

    # --- running ---------------------------------------------------------------------------
    def banner(self) -> str:
        nodes = ", ".join(
            f"{c.name} http://127.0.0.1:{c.port}"
            for c in self.supervisor.children
            if c.name.startswith("local-")
        )
        lines = [
            "",
            "crawlfleet is up",
            f"  dashboard  {self.url}/",
            f"  REST API   {self.url}/api/v1/docs",
            f"  Scrapyd    {self.url}/scrapyd/"
            + (f" and http://127.0.0.1:{self.args.scrapyd_port}/" if self.args.scrapyd_port else ""),
            f"  admin      {self.url}/admin/",
            f"  login      {self.login}",
            f"  API token  operator token in {self.data_dir / 'api-token'}",
            f"  nodes      {nodes}",
            f"  deployed   {self.deploy_note}",
            f"  task       {self.task_note}",
        ]
        if self.demo_url:
            lines.append(f"  demo site  {self.demo_url}/")
        lines += [f"  logs       {self.logs}", "Press Ctrl-C to stop.", ""]
        return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.nodes < 0:
        print("crawlfleet up: error: --nodes must be 0 or more", file=sys.stderr)
        return 2
    supervisor = Supervisor()
    platform = Platform(args, supervisor)
    with stop_signals_raise_shutdown():
        try:
            platform.configure_environment()
            platform.choose_ports()
            node_token, api_token = platform.prepare_database()
            platform.start_processes(node_token)
            platform.wait_for_nodes()
            platform.deploy(api_token)
            platform.ensure_example_task()
            print(platform.banner(), flush=True)
            return supervisor.supervise()
        except UpError as exc:
            print(f"crawlfleet up: error: {exc}", file=sys.stderr, flush=True)
            return 1
        except Shutdown:
            return 0
        finally:
            supervisor.stop()
