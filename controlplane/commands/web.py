"""``crawlfleet web``: the dashboard, the REST API, the Scrapyd-compatible API, the admin and the
spider reports, served by gunicorn.

Start-up runs the migrations (serialised by a lock, see ``controlplane.commands.bootstrap``) and the
env-driven bootstrap, collects the admin's static files if they changed, then hands the process
to gunicorn's arbiter: SIGTERM drains requests gracefully, SIGINT stops at once. Deployments with
several replicas run ``--migrate-only`` once and start the replicas with ``--no-migrate``.

No scheduler runs in here: ``crawlfleet scheduler`` is its own process, so any number of web
workers never fire a task twice.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind",
        default=os.environ.get("CRAWLFLEET_WEB_BIND", "127.0.0.1:8000"),
        help="HOST:PORT to listen on (env CRAWLFLEET_WEB_BIND; default 127.0.0.1:8000)",
    )
    parser.add_argument(
        "--scrapyd-bind",
        default=os.environ.get("CRAWLFLEET_SCRAPYD_BIND", ""),
        metavar="HOST:PORT",
        help="also listen here, with the Scrapyd-compatible API at the root, for tools that "
        "take only host:port such as ScrapydWeb (env CRAWLFLEET_SCRAPYD_BIND; default: none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int("CRAWLFLEET_WEB_WORKERS", 2),
        help="gunicorn worker processes (env CRAWLFLEET_WEB_WORKERS; default 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=_env_int("CRAWLFLEET_WEB_THREADS", 4),
        help="threads per worker, for many small spider reports (default 4)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=_env_int("CRAWLFLEET_WEB_TIMEOUT", 120),
        help="seconds a request may take (egg uploads to many nodes); default 120",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-migrate",
        action="store_true",
        help="skip migrations and bootstrap (another process ran them)",
    )
    group.add_argument(
        "--migrate-only",
        action="store_true",
        help="run migrations and the env-driven bootstrap, then exit",
    )


def gunicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    """Gunicorn settings: threaded workers, logs on stderr, no shared control socket."""
    options: dict[str, Any] = {
        "bind": [args.bind, *([args.scrapyd_bind] if args.scrapyd_bind else [])],
        "workers": max(1, args.workers),
        "worker_class": "gthread",
        "threads": max(1, args.threads),
        "timeout": args.timeout,
        "graceful_timeout": _env_int("CRAWLFLEET_WEB_GRACEFUL_TIMEOUT", 20),
        "keepalive": 5,
        # Recycle workers now and then so a slow leak never grows without bound.
        "max_requests": 5000,
        "max_requests_jitter": 500,
        "proc_name": "crawlfleet-web",
        "errorlog": "-",
        "loglevel": os.environ.get("CRAWLFLEET_LOG_LEVEL", "info").lower(),
        "forwarded_allow_ips": os.environ.get("CRAWLFLEET_FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # The default control socket is one path per user: replicas on a host would collide.
        "control_socket_disable": True,
    }
    access_log = os.environ.get("CRAWLFLEET_WEB_ACCESS_LOG", "")
    if access_log:
        options["accesslog"] = access_log
    return options


def serve(options: dict[str, Any]) -> int:
    """Run gunicorn's arbiter in this process until it is told to stop."""
    from gunicorn.app.base import BaseApplication

    class WebApplication(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from controlplane.wsgi import application

            return application

    try:
        WebApplication().run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def scrapyd_port(bind: str) -> int:
    """The port of a ``HOST:PORT`` (or ``[v6]:PORT``) bind address."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"crawlfleet web: error: --scrapyd-bind {bind!r} is not HOST:PORT")
    return int(port)


def run(args: argparse.Namespace) -> int:
    if args.scrapyd_bind:
        # Read by settings: requests on this listener get the Scrapyd API at the root.
        os.environ["CRAWLFLEET_SCRAPYD_PORTS"] = str(scrapyd_port(args.scrapyd_bind))
        if args.scrapyd_bind == args.bind:
            raise SystemExit("crawlfleet web: error: --scrapyd-bind must differ from --bind")
    from controlplane.django_setup import setup

    setup()
    from django.db import connections

    from controlplane.commands import bootstrap

    if not args.no_migrate:
        bootstrap.migrate(verbosity=1)
        for what in bootstrap.bootstrap_from_env():
            print(f"ensured {what}", file=sys.stderr, flush=True)
        if args.migrate_only:
            return 0
    if bootstrap.collect_static_if_needed():
        print("collected static files", file=sys.stderr, flush=True)
    # Workers are forked from this process: none may inherit an open database connection.
    connections.close_all()
    return serve(gunicorn_options(args))
