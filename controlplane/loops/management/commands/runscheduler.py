"""``runscheduler``: the scheduler loop (see :mod:`controlplane.loops.scheduler`)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from controlplane.loops.scheduler import Scheduler


class Command(BaseCommand):
    help = "Fire cron tasks exactly once and dispatch queued jobs to the fleet. Safe as replicas."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--tick",
            type=float,
            default=None,
            help="seconds between dispatch passes for queued jobs "
            "(default: CRAWLFLEET_SCHEDULER_TICK)",
        )
        parser.add_argument(
            "--sync-interval",
            type=float,
            default=None,
            help="seconds between reloads of the task table (default: CRAWLFLEET_SCHEDULER_SYNC)",
        )
        parser.add_argument(
            "--no-dispatch",
            action="store_true",
            help="only record fires; leave dispatching to other replicas",
        )
        parser.add_argument("--name", default="", help="replica name for the logs")

    def handle(self, *args: Any, **options: Any) -> None:
        scheduler = Scheduler(
            tick=options["tick"],
            sync_interval=options["sync_interval"],
            dispatch_jobs=not options["no_dispatch"],
            name=options["name"],
        )

        def request_stop(signum: int, _frame: object) -> None:
            # Work in progress is a committed transaction or a bounded HTTP call: finish it, leave.
            scheduler.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        scheduler.run()
