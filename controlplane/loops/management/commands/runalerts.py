"""``runalerts``: the alert sender loop alone (see :mod:`controlplane.loops.alerter`)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from controlplane.loops.alerter import Alerter


class Command(BaseCommand):
    help = (
        "Route operational events to alert channels and send them. Pollers run this too unless "
        "started with --no-alerts. Safe as replicas."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run one cycle, then exit")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between cycles (default: CRAWLFLEET_ALERT_INTERVAL)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            stop.set()  # finish the delivery in progress, then leave

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        Alerter(interval=options["interval"]).run(stop, once=options["once"])
