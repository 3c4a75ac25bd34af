"""OutcomeReporter: the crawl tells the control plane it started, that it is alive, how it ended.

Scrapyd has no failure signal (every ended job is "finished"), so the crawl's own report is the
most reliable account of its outcome: ``started`` when the spider opens, ``heartbeat`` with a stats
snapshot every ``CRAWLFLEET_HEARTBEAT_INTERVAL`` seconds, and ``finished`` with the final stats and
finish reason when it closes. The last one is awaited (within ``CRAWLFLEET_REPORT_TIMEOUT``) so it
is delivered before the process exits.

The control plane may answer ``{"action": "stop"}`` (the job was cancelled, has ended, or was
declared lost and may be retried elsewhere); the spider then closes with the reason
``stopped_by_controlplane``. Reaching the control plane is never allowed to break the crawl:
HTTP calls run in a thread with short timeouts, and failures are logged and counted in the stats
(``crawlfleet/report_failures``).

Enabled when ``CRAWLFLEET_REPORT_URL`` is set, which the dispatcher does per job together with
``CRAWLFLEET_JOB_TOKEN``. Local ``scrapy crawl`` runs leave it empty and report nothing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests
from scrapy import Spider, signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call, run_in_thread
from scrapy.utils.defer import deferred_from_coro

from crawler.statsbuffer import send_stats_snapshot

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

STOP_REASON = "stopped_by_controlplane"
USER_AGENT = "crawlfleet-reporter"


def jsonable(value: Any) -> Any:
    """Stats as JSON: datetimes as ISO strings, durations as seconds, anything odd as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


class ReportError(Exception):
    """One report could not be delivered; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class OutcomeReporter:
    def __init__(
        self,
        crawler: Crawler,
        url: str,
        token: str,
        *,
        interval: float,
        timeout: float,
        final_timeout: float,
    ) -> None:
        self.crawler = crawler
        self.url = url
        self.token = token
        self.interval = interval
        self.timeout = timeout
        self.final_timeout = final_timeout
        # No shared Session: reports may overlap in different threads.
        self.headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        self.failures = 0
        self.streak = 0
        self.sent = 0
        self.stop_requested = False
        self.closing = False
        self._beat_in_flight = False
        self._loop: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> OutcomeReporter:
        settings = crawler.settings
        url = (settings.get("CRAWLFLEET_REPORT_URL") or "").strip()
        if not url:
            raise NotConfigured("CRAWLFLEET_REPORT_URL is not set")
        token = (settings.get("CRAWLFLEET_JOB_TOKEN") or "").strip()
        if not token:
            logger.warning(
                "CRAWLFLEET_REPORT_URL is set without CRAWLFLEET_JOB_TOKEN; not reporting"
            )
            raise NotConfigured("CRAWLFLEET_JOB_TOKEN is not set")
        reporter = cls(
            crawler,
            url,
            token,
            interval=settings.getfloat("CRAWLFLEET_HEARTBEAT_INTERVAL", 10.0),
            timeout=settings.getfloat("CRAWLFLEET_REPORT_REQUEST_TIMEOUT", 5.0),
            final_timeout=settings.getfloat("CRAWLFLEET_REPORT_TIMEOUT", 20.0),
        )
        crawler.signals.connect(reporter.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(reporter.spider_closed, signal=signals.spider_closed)
        return reporter

    # --- HTTP (runs in a thread) ---------------------------------------------------------------
    def _post(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            response = requests.post(self.url, json=payload, headers=self.headers, timeout=timeout)
        except requests.RequestException as exc:
            raise ReportError(f"control plane unreachable: {exc}", retry=True) from exc
        if response.status_code >= 500:
            raise ReportError(f"control plane answered HTTP {response.status_code}", retry=True)
        if response.status_code >= 400:
            raise ReportError(
                f"control plane refused the report (HTTP {response.status_code}): "
                f"{response.text[:300]}",
                retry=False,
            )
        try:
            reply = response.json()
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}

    def _post_until(self, payload: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Retry a report that matters (``finished``) until it is delivered or time is up."""
        delay = 0.5
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self._post(payload, max(0.5, min(self.timeout, remaining)))
            except ReportError as exc:
                remaining = deadline - time.monotonic()
                if not exc.retry or remaining <= delay:
                    raise
                logger.info("report %s not delivered yet (%s); retrying", payload["event"], exc)
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    # --- bookkeeping (reactor thread) --------------------------------------------------------
    def _payload(self, event: str, **extra: Any) -> dict[str, Any]:
        send_stats_snapshot(self.crawler)  # counters kept in memory are written in first
        return {"event": event, "stats": jsonable(self.crawler.stats.get_stats()), **extra}

    def _failed(self, event: str, exc: BaseException) -> None:
        """Count every failure; log the first of a streak and then rarely, not every beat."""
        self.failures += 1
        self.streak += 1
        self.crawler.stats.inc_value("crawlfleet/report_failures")
        level = (
            logging.WARNING
            if self.streak in (1, 10, 100) or event != "heartbeat"
            else logging.DEBUG
        )
        logger.log(
            level,
            "could not report %s to the control plane (%d failed in a row): %s",
            event,
            self.streak,
            str(exc)[:300],
        )

    def _handle_reply(self, event: str, reply: dict[str, Any]) -> None:
        self.sent += 1
        self.crawler.stats.inc_value("crawlfleet/reports_sent")
        if self.streak:
            logger.info("the control plane is reachable again after %d failures", self.streak)
            self.streak = 0
        if reply.get("action") == "stop" and not self.stop_requested and not self.closing:
            self.stop_requested = True
            logger.warning(
                "the control plane asked this crawl to stop: %s", reply.get("reason") or "-"
            )
            engine = self.crawler.engine
            if engine is not None:
                deferred_from_coro(self._close(engine))

    async def _close(self, engine: Any) -> None:
        try:
            await engine.close_spider_async(reason=STOP_REASON)
        except RuntimeError as exc:  # not open yet or already closed
            logger.info("could not close the spider on request: %s", exc)

    async def _send(self, event: str, **extra: Any) -> None:
        """One best-effort report; never raises."""
        try:
            reply = await run_in_thread(self._post, self._payload(event, **extra), self.timeout)
        except Exception as exc:
            self._failed(event, exc)
            return
        self._handle_reply(event, reply)

    # --- signals -------------------------------------------------------------------------------
    def spider_opened(self, spider: Spider) -> None:
        deferred_from_coro(self._send("started"))
        if self.interval > 0:
            self._loop = create_looping_call(self._tick)
            self._loop.start(self.interval, now=False)

    def _tick(self) -> None:
        if self._beat_in_flight or self.closing:
            return  # a slow control plane must not pile up requests
        self._beat_in_flight = True
        deferred_from_coro(self._heartbeat())

    async def _heartbeat(self) -> None:
        try:
            await self._send("heartbeat")
        finally:
            self._beat_in_flight = False

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        """Deliver the outcome before the process exits, within ``final_timeout``."""
        self.closing = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.crawler.stats.set_value("finish_reason", reason)
        payload = self._payload("finished", finish_reason=reason)
        deadline = time.monotonic() + self.final_timeout
        try:
            reply = await run_in_thread(self._post_until, payload, deadline)
        except Exception as exc:
            self._failed("finished", exc)
            # A warning, not an error: an outage of the control plane must not count as an
            # error of the crawl (error counts decide whether a run failed).
            logger.warning(
                "the outcome of this crawl (%s) did not reach the control plane at %s",
                reason,
                self.url,
            )
            return
        self.sent += 1
        logger.info("reported the outcome (%s) to the control plane", reason)
        if reply.get("action") == "stop" and reply.get("reason"):
            logger.info("control plane: %s", reply["reason"])
