"""``crawlfleet scheduler``: fire cron tasks exactly once and dispatch jobs. Safe as replicas.

The options are ``manage.py runscheduler``'s too: that command adds them with ``add_arguments``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crawlfleet scheduler`` and ``manage.py runscheduler``."""
    parser.add_argument(
        "--tick",
        type=float,
        default=None,
        help="seconds between dispatch passes for queued jobs (default: CRAWLFLEET_SCHEDULER_TICK)",
    )
    parser.add_argument(
        "--sync-interval",
        type=float,
        default=None,
        help="seconds between reloads of the task table (default: CRAWLFLEET_SCHEDULER_SYNC, 2)",
    )
    parser.add_argument(
        "--no-dispatch",
        action="store_true",
        help="only record fires; leave dispatching to other replicas",
    )
    parser.add_argument("--name", default="", help="replica name for the logs")


def run(args: argparse.Namespace) -> int:
    from controlplane.django_setup import setup

    setup()
    from django.core.management import call_command

    call_command(
        "runscheduler",
        tick=args.tick,
        sync_interval=args.sync_interval,
        no_dispatch=args.no_dispatch,
        name=args.name,
    )
    return 0
