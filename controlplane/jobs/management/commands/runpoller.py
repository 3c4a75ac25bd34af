"""``manage.py runpoller``: the poller loop (see controlplane.jobs.tracking)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from controlplane.commands import poller as cli
from controlplane.jobs.tracking import Poller


class Command(BaseCommand):
    help = "Watch nodes and jobs: health, job states, failure detection, retries."

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            # Finish the cycle in progress, then leave: every change it makes is a committed
            # conditional update, so stopping between cycles never leaves a half-done step.
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        Poller(interval=options["interval"]).run(stop, once=options["once"])
