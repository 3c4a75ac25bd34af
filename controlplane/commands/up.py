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

Supervision: a child that exits is reported and restarted after a short pause. A child that
exits 5 times within a minute is crash-looping, which a restart will not fix: ``up`` then stops
everything and exits with status 1. Ctrl-C (SIGINT) or SIGTERM stops every process group, the
nodes' spiders included, and exits 0. Both handlers are installed explicitly: a script's
``crawlfleet up &`` starts ``up`` with SIGINT ignored, and Python then installs no handler of
its own, so SIGINT did nothing.

An inherited ``CRAWLFLEET_DATABASE_URL`` is honoured (``up`` against PostgreSQL works too).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from controlplane.procutil import ManagedProcess, ProcessFailed, free_port, port_open

EXAMPLE_TASK = "books-demo"
EXAMPLE_CRON = "*/5 * * * *"
PROJECT = "crawler"
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW = 60.0
RESTART_PAUSE = 1.0
REGISTER_TIMEOUT = 90.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown(Exception):
    """SIGINT or SIGTERM arrived: stop every process group and exit."""


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


@dataclass
class Child:
    """One supervised process and its recent exits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: ManagedProcess | None = None
    exits: collections.deque[float] = field(default_factory=collections.deque)

    def start(self) -> None:
        self.process = ManagedProcess(
            self.name, self.argv, log_path=self.log_path, env=self.env
        ).start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    @property
    def returncode(self) -> int | None:
        proc = self.process.proc if self.process else None
        return proc.returncode if proc else None

    def log_tail(self, limit: int = 2000) -> str:
        return self.process.log_tail(limit) if self.process else ""

    def wait(self, timeout: float) -> None:
        proc = self.process.proc if self.process else None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)

    def signal_group(self, sig: int) -> None:
        if self.process is not None:
            self.process.signal_group(sig)

    def stop(self, timeout: float) -> None:
        """Stop the whole group; also reaps what an exited leader left behind (spiders)."""
        if self.process is not None:
            self.process.stop(timeout=timeout)


class Platform:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir: Path = args.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.url = f"http://127.0.0.1:{args.port}"
        self.children: list[Child] = []
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
                "choose others with --port, --node-port or --demo-port"
            )

    def prepare_database(self) -> tuple[str, str]:
        """Migrations, the admin login and the two local tokens; returns (node, api) tokens."""
        from controlplane.django_setup import setup

        setup()
        from django.db import connections

        from controlplane import bootstrap

        print("applying migrations ...", flush=True)
        bootstrap.migrate(verbosity=0)
        self.login = self.ensure_admin()
        node_token = bootstrap.local_token(self.data_dir / "node-token", "local-nodes", "node")
        api_token = bootstrap.local_token(self.data_dir / "api-token", "local-operator", "operator")
        connections.close_all()
        return node_token, api_token

    def ensure_admin(self) -> str:
        """The login to print: from the environment, or generated once and kept."""
        from django.contrib.auth import get_user_model

        from controlplane import bootstrap

        user = os.environ.get("CRAWLFLEET_ADMIN_USER", "")
        password = os.environ.get("CRAWLFLEET_ADMIN_PASSWORD", "")
        if user and password:
            bootstrap.ensure_admin(user, password)
            return f"{user} / (the password in CRAWLFLEET_ADMIN_PASSWORD)"
        stored = self.data_dir / "admin-login.json"
        try:
            saved = json.loads(stored.read_text())
            user, password = saved["username"], saved["password"]
        except (OSError, ValueError, KeyError):
            user, password = user or "admin", secrets.token_urlsafe(12)
            bootstrap.write_private(
                stored, json.dumps({"username": user, "password": password}) + "\n"
            )
            bootstrap.ensure_admin(user, password)
            return f"{user} / {password}"
        existing = get_user_model().objects.filter(username=user).first()
        if existing is None:
            bootstrap.ensure_admin(user, password)
        elif not existing.check_password(password):
            return f"{user} / (changed since it was generated into {stored})"
        return f"{user} / {password}"

    # --- children ----------------------------------------------------------------------
    def add(self, name: str, argv: list[str], port: int | None = None, **env: str) -> Child:
        child = Child(name, argv, {**os.environ, **env}, self.logs / f"{name}.log", port)
        self.children.append(child)
        child.start()
        return child

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
        self.check_ports([self.args.port, *self.ports, *extra])

    def start_processes(self, node_token: str) -> None:
        node_ports = self.ports
        if self.demo_url:
            demo = self.add(
                "demosite",
                [sys.executable, "-m", "controlplane.demosite", "--port", str(self.args.demo_port)],
                port=self.args.demo_port,
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
        for child in self.children:
            if not child.alive():
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
        from controlplane.eggs import EggError, build_egg

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
            for c in self.children
            if c.name.startswith("local-")
        )
        lines = [
            "",
            "crawlfleet is up",
            f"  URL        {self.url}/admin/",
            f"  API        {self.url}/api/v1/docs",
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

    def supervise(self) -> int:
        """Restart children that exit; give up on a crash loop. Returns the exit status."""
        while True:
            time.sleep(0.5)
            for child in self.children:
                if child.alive():
                    continue
                status = child.returncode
                now = time.monotonic()
                child.exits.append(now)
                while child.exits and now - child.exits[0] > CRASH_LOOP_WINDOW:
                    child.exits.popleft()
                if len(child.exits) >= CRASH_LOOP_EXITS:
                    print(
                        f"{child.name} exited {len(child.exits)} times within "
                        f"{CRASH_LOOP_WINDOW:.0f}s (last status {status}); stopping everything. "
                        f"See {child.log_path}",
                        flush=True,
                    )
                    return 1
                print(
                    f"{child.name} exited with status {status}; restarting it "
                    f"(see {child.log_path})",
                    flush=True,
                )
                child.stop(timeout=2)  # leftovers of its group, e.g. orphaned spiders
                time.sleep(RESTART_PAUSE)
                child.start()

    def stop(self) -> None:
        """Stop every process group: TERM all at once, then KILL whatever is left."""
        live = [c for c in self.children if c.process is not None]
        if not live:
            return
        print("stopping ...", flush=True)
        for child in live:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in reversed(live):
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
            child.stop(timeout=1)
        print("stopped", flush=True)


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    # Only the first signal counts: a second Ctrl-C must not interrupt the clean-up.
    _ignore_stop_signals()
    raise Shutdown()


def run(args: argparse.Namespace) -> int:
    if args.nodes < 0:
        print("crawlfleet up: error: --nodes must be 0 or more", file=sys.stderr)
        return 2
    platform = Platform(args)
    # Whatever was inherited; children started from here get the default handling back.
    previous = {signum: signal.signal(signum, _raise_shutdown) for signum in STOP_SIGNALS}
    try:
        platform.configure_environment()
        platform.choose_ports()
        node_token, api_token = platform.prepare_database()
        platform.start_processes(node_token)
        platform.wait_for_nodes()
        platform.deploy(api_token)
        platform.ensure_example_task()
        print(platform.banner(), flush=True)
        return platform.supervise()
    except UpError as exc:
        print(f"crawlfleet up: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except Shutdown:
        return 0
    finally:
        # Nothing may interrupt the clean-up and leave process groups behind.
        _ignore_stop_signals()
        try:
            platform.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
