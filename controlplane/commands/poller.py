"""``crawlfleet poller``: watch nodes and jobs, detect failures, retry. Safe to run as replicas."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="run one cycle, then exit")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between cycles (default: CRAWLFLEET_POLL_INTERVAL)",
    )


def run(args: argparse.Namespace) -> int:
    from controlplane.django_setup import setup

    setup()
    from django.core.management import call_command

    options = {"once": args.once}
    if args.interval is not None:
        options["interval"] = args.interval
    call_command("runpoller", **options)
    return 0
