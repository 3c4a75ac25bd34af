"""``crawlfleet poller``: watch nodes and jobs, detect failures, retry. Safe to run as replicas.

The options are ``manage.py runpoller``'s too: that command adds them with ``add_arguments``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crawlfleet poller`` and ``manage.py runpoller``."""
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

    call_command("runpoller", once=args.once, interval=args.interval)
    return 0
