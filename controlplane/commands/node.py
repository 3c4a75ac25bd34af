"""``crawlfleet node``: one Scrapyd node configured for the fleet, optionally self-registering.

Never imports Django: this runs on Scrapyd hosts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from scrapydnode.config import NodeConfig, NodeConfigError, parse_tags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, required=True, help="HTTP port of Scrapyd")
    parser.add_argument(
        "--dir", type=Path, required=True, help="node directory: config, eggs, logs, databases"
    )
    parser.add_argument("--bind", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--max-proc", type=int, default=None, help="parallel crawls (default: CPU count)"
    )
    parser.add_argument("--name", default="", help="node name (default: <hostname>-<port>)")
    parser.add_argument("--tags", default="", help="comma-separated tags, e.g. eu,proxy")
    parser.add_argument(
        "--url",
        default="",
        help="base URL the control plane reaches this node at (default: from --bind and --port)",
    )
    parser.add_argument("--register", metavar="URL", help="control plane base URL to register with")
    parser.add_argument(
        "--token",
        default=os.environ.get("CRAWLFLEET_NODE_TOKEN"),
        help="API token for --register (default: $CRAWLFLEET_NODE_TOKEN, which keeps it out of ps)",
    )
    parser.add_argument(
        "--heartbeat", type=float, default=15.0, help="seconds between registrations (default 15)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between queue polls (default 1)"
    )
    parser.add_argument(
        "--jobs-to-keep", type=int, default=20, help="job logs kept per spider (default 20)"
    )
    parser.add_argument(
        "--finished-to-keep", type=int, default=200, help="finished jobs listed (default 200)"
    )


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    config = NodeConfig(
        port=args.port,
        dir=args.dir,
        bind=args.bind,
        name=args.name,
        tags=parse_tags(args.tags),
        url=args.url,
        register=args.register,
        token=args.token if args.register else None,
        heartbeat=args.heartbeat,
        poll_interval=args.poll_interval,
        jobs_to_keep=args.jobs_to_keep,
        finished_to_keep=args.finished_to_keep,
    )
    if args.max_proc is not None:
        config.max_proc = args.max_proc
    if args.register and not args.token:
        raise NodeConfigError("--register needs --token (or CRAWLFLEET_NODE_TOKEN)")
    return config


def run(args: argparse.Namespace) -> int:
    from scrapydnode.server import run_node

    try:
        return run_node(config_from_args(args))
    except NodeConfigError as exc:
        print(f"crawlfleet node: error: {exc}", file=sys.stderr)
        return 2
