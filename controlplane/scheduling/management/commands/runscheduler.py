"""``manage.py runscheduler``: the scheduler loop (see controlplane.scheduling.scheduler)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from controlplane.commands import scheduler as cli
from controlplane.scheduling.scheduler import SYNC_INTERVAL, Scheduler


class Command(BaseCommand):
    help = "Fire cron tasks exactly once and dispatch queued jobs to the fleet."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        scheduler = Scheduler(
            tick=options["tick"],
            sync_interval=(
                SYNC_INTERVAL if options["sync_interval"] is None else options["sync_interval"]
            ),
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
