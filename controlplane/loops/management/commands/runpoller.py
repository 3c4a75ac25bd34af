"""``runpoller``: the poller loop (see :mod:`controlplane.loops.poller`)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from controlplane.loops.alerter import Alerter
from controlplane.loops.poller import Poller


class Command(BaseCommand):
    help = "Watch nodes and jobs: health, job states, failure detection, retries. Safe as replicas."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="run one cycle over every node (not a share among replicas), then exit",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between cycles (default: CRAWLFLEET_POLL_INTERVAL)",
        )
        parser.add_argument(
            "--name",
            default=None,
            help="replica name, unique among the pollers (default: host:pid:random)",
        )
        parser.add_argument(
            "--no-alerts",
            action="store_true",
            help="do not send alerts from this process (run `crawlfleet alerts` instead)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            # Finish the cycle in progress, then leave: every change it makes is a committed
            # conditional update, so stopping between cycles never leaves a half-done step.
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        thread = None
        send_alerts = not options["no_alerts"]
        if send_alerts and not options["once"]:
            # The alert sender in its own thread: a slow channel never delays a poll cycle.
            thread = Alerter().start_thread(stop)
        poller = Poller(
            interval=options["interval"], shard=not options["once"], name=options["name"] or None
        )
        poller.run(stop, once=options["once"])
        if send_alerts and options["once"]:
            Alerter().run(stop, once=True)  # what this cycle raised goes out before exiting
        if thread is not None:
            stop.set()
            thread.join(timeout=30)
