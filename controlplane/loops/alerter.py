"""The alert sender loop: route queued events, then send due deliveries, each step bounded.

It runs in every poller (a background thread, unless ``runpoller --no-alerts``) and as
``crawlfleet alerts``. Replicas are safe: every claim is a conditional update
(:mod:`controlplane.alerts.routing`, :mod:`controlplane.alerts.sending`). A slow channel only
delays alerts, never the poller's own cycles: the sender has its own thread and connection.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from controlplane.alerts import routing, sending

logger = logging.getLogger(__name__)

# Old deliveries and events are purged about this often (seconds).
PURGE_EVERY = 600.0


@dataclass
class AlertCycle:
    routed: int = 0
    sending: sending.SendResult = field(default_factory=sending.SendResult)
    duration: float = 0.0


class Alerter:
    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval or settings.CRAWLFLEET_ALERT_INTERVAL
        self._purged_at = 0.0

    def cycle(self, now: datetime | None = None) -> AlertCycle:
        """One batch of routing, one batch of sending (``now``: the clock, for tests)."""
        started = time.monotonic()
        result = AlertCycle()
        result.routed = routing.route_batch(now)
        result.sending = sending.send_due(now or timezone.now())
        if started - self._purged_at > PURGE_EVERY:
            self._purged_at = started
            sending.purge(now)
        result.duration = time.monotonic() - started
        return result

    def run(self, stop: threading.Event, once: bool = False) -> None:
        logger.info("alert sender started: every %.1f s", self.interval)
        try:
            while not stop.is_set():
                started = time.monotonic()
                close_old_connections()
                try:
                    result = self.cycle()
                except Exception:
                    logger.exception("alert cycle failed")
                    connections.close_all()  # the connection may be broken: reconnect
                else:
                    if result.routed == routing.ROUTE_BATCH and not once:
                        continue  # a backlog: the next batch at once
                if once:
                    break
                stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            connections.close_all()
            logger.info("alert sender stopping")

    def start_thread(self, stop: threading.Event) -> threading.Thread:
        """Run in a daemon thread next to another loop (the poller)."""
        thread = threading.Thread(target=self.run, args=(stop,), name="alerts", daemon=True)
        thread.start()
        return thread
