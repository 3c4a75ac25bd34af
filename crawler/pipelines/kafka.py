"""Kafka sink: every item becomes one JSON message keyed by the item's stable id.

Delivery is asynchronous so that a slow or distant broker never slows the crawl: ``process_item``
hands the message to librdkafka (through confluent-kafka) and returns. librdkafka batches and
sends on its own threads, outside the interpreter lock; its delivery reports are served on the
reactor thread (by ``poll`` every ``KAFKA_POLL_INTERVAL``, not per item), where they count what the broker
acknowledged and what it refused. Nothing is lost silently:

* every item handed to Kafka ends up counted once, in ``kafka/items_delivered`` or in
  ``kafka/items_failed`` (failures are logged with their cause). Delivered means acknowledged by
  every in-sync replica; failed means not acknowledged, which after a lost acknowledgement can
  still mean written, so consumers de-duplicate on the message key;
* ``close_spider`` waits for every outstanding delivery (bounded by ``KAFKA_DELIVERY_TIMEOUT``),
  and counts whatever is still unconfirmed after that as failed (``kafka/items_unconfirmed``);
* a full local queue makes ``process_item`` wait for room (``kafka/queue_full_waits``);
* ``kafka/items_sent`` and ``kafka/items_delivered`` are written into the stats before every
  report (``crawler/statsbuffer.py``'s ``stats_snapshot``) and at close, not per item;
* past ``KAFKA_FAILURE_THRESHOLD`` failures the run is a failure. Mid-crawl, the pipeline closes
  the spider at once with the reason ``kafka_delivery_failed`` (there is no point crawling pages
  whose items cannot be delivered). Failures found only while closing come too late to change
  Scrapy's close reason, so in every failing case the pipeline also sets the stats
  ``crawlfleet/outcome = "failed"`` and ``crawlfleet/failure_reason``, which the control plane
  reads before the close reason.

A broker that cannot be reached when the spider opens stops the run before its first request:
the pipeline logs one clear error and raises ``CloseSpider("kafka_unavailable")`` from
``open_spider``, which Scrapy honours once every component has opened.

Settings (namespaced, each overridable per spider through ``custom_settings``):

``KAFKA_BOOTSTRAP_SERVERS``  comma-separated ``host:port`` list; empty disables the pipeline.
``KAFKA_TOPIC``              topic for items; a spider's ``kafka_topic`` attribute wins over it.
``KAFKA_FAILURE_THRESHOLD``  failed deliveries tolerated before the run fails (0: none).
``KAFKA_DELIVERY_TIMEOUT``   seconds a message may take to be acknowledged, retries included (60).
``KAFKA_STARTUP_TIMEOUT``    seconds to reach the cluster and the topic when the spider opens (10).
``KAFKA_PRODUCER_CONFIG``    extra librdkafka properties (``compression.type``...), over ours.
``KAFKA_CLIENT_LOG_LEVEL``   level of the ``librdkafka`` logger that librdkafka's log goes to.
``KAFKA_POLL_INTERVAL``      seconds between two servings of delivery reports (0.1).

Every duration must be a number of seconds above 0; an invalid value stops the run when the
spider opens, naming the setting (finish reason ``kafka_misconfigured``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, NotConfigured
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet import task, threads

from crawler.items import encode_item, stable_id
from crawler.kafkaclient import (
    POLL_INTERVAL,
    bootstrap_servers,
    client_logger,
    describe,
    parse_count,
    parse_seconds,
    producer_properties,
    wait_for_topic,
)
from crawler.pipelines.csv import job_id_of
from crawler.statsbuffer import stats_snapshot

logger = logging.getLogger(__name__)

REASON_UNAVAILABLE = "kafka_unavailable"
REASON_DELIVERY_FAILED = "kafka_delivery_failed"
REASON_MISCONFIGURED = "kafka_misconfigured"

# Individual failures are logged up to this many, then every LOG_EVERY-th: a dead broker fails
# every in-flight item at once, and one line per item would bury the cause.
LOG_FIRST_FAILURES = 10
LOG_EVERY = 100
STAT_SENT = "kafka/items_sent"
STAT_DELIVERED = "kafka/items_delivered"
STAT_FAILED = "kafka/items_failed"
STAT_UNCONFIRMED = "kafka/items_unconfirmed"
STAT_OUTCOME = "crawlfleet/outcome"
STAT_FAILURE_REASON = "crawlfleet/failure_reason"

_MISSING: Any = object()  # "not pending": a send number that was already accounted for


class KafkaPipeline:
    """Sends every item to Kafka and accounts for each one (see the module docstring).

    Everything but the start-up metadata request and the final flush runs on the reactor
    thread, and those two run while the reactor thread waits for them: no lock is needed.
    """

    def __init__(
        self,
        crawler: Crawler,
        *,
        servers: list[str],
        failure_threshold: int,
        delivery_timeout: float,
        startup_timeout: float,
        producer_config: Mapping[str, Any],
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.servers = servers
        self.failure_threshold = failure_threshold
        self.delivery_timeout = delivery_timeout
        self.startup_timeout = startup_timeout
        self.producer_config = dict(producer_config)
        self.poll_interval = poll_interval
        self.settings_error = ""  # a setting found invalid, refused when the spider opens
        self.producer: Producer | None = None
        self.topic = ""
        self.headers: list[tuple[str, bytes]] = []
        self._pending: dict[int, str | None] = {}  # send number -> stable id, until confirmed
        self._next_number = 0
        self._items = 0  # items that reached this pipeline: delivered + failed in the end
        self._sent = 0
        self._delivered = 0
        self._failed = 0
        self._client_errors: set[int] = set()  # cluster-wide errors logged since a delivery
        self._closing_for_failures = False
        self._closing = False  # close_spider has begun: no more early closes
        self._poller: task.LoopingCall | None = None
        self._reactor: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> KafkaPipeline:
        settings = crawler.settings
        servers = bootstrap_servers(settings.get("KAFKA_BOOTSTRAP_SERVERS", ""))
        if not servers:
            raise NotConfigured("KAFKA_BOOTSTRAP_SERVERS is empty")
        level = settings.get("KAFKA_CLIENT_LOG_LEVEL", "CRITICAL")
        # librdkafka logs every refused connection at ERROR. Scrapy counts those as crawl
        # errors, so by default they are muted and this pipeline reports what matters
        # (unreachable cluster, failed deliveries) with the cause.
        client_logger.setLevel(level.upper() if isinstance(level, str) else level)
        # An invalid number is refused when the spider opens, as a misconfiguration like any
        # other (finish reason kafka_misconfigured); the default stands in until then.
        errors: list[str] = []

        def checked(parse: Any, name: str, default: Any) -> Any:
            try:
                return parse(name, settings.get(name, default))
            except ValueError as exc:
                errors.append(str(exc))
                return default

        pipeline = cls(
            crawler,
            servers=servers,
            failure_threshold=checked(parse_count, "KAFKA_FAILURE_THRESHOLD", 0),
            delivery_timeout=checked(parse_seconds, "KAFKA_DELIVERY_TIMEOUT", 60.0),
            startup_timeout=checked(parse_seconds, "KAFKA_STARTUP_TIMEOUT", 10.0),
            producer_config=settings.getdict("KAFKA_PRODUCER_CONFIG", {}),
            poll_interval=checked(parse_seconds, "KAFKA_POLL_INTERVAL", POLL_INTERVAL),
        )
        pipeline.settings_error = "; ".join(errors)
        crawler.signals.connect(pipeline.write_counts, signal=stats_snapshot)
        return pipeline

    def write_counts(self) -> None:
        """Sent and delivered into the stats: before every report and at close, not per item."""
        self.stats.set_value(STAT_SENT, self._sent)
        self.stats.set_value(STAT_DELIVERED, self._delivered)

    # --- opening ------------------------------------------------------------------------------

    def producer_properties(self) -> dict[str, Any]:
        return producer_properties(
            self.servers,
            client_id=f"crawlfleet-{self.crawler.spider.name}",
            delivery_timeout=self.delivery_timeout,
            error_cb=self._client_error_cb,
            extra=self.producer_config,
        )

    async def open_spider(self) -> None:
        # Imported here, not at module level, so that importing this module never installs a
        # reactor before Scrapy has chosen one.
        from twisted.internet import reactor

        self._reactor = reactor
        spider = self.crawler.spider
        self.topic = str(
            getattr(spider, "kafka_topic", None) or self.crawler.settings["KAFKA_TOPIC"]
        )
        self.headers = [
            ("crawlfleet-spider", spider.name.encode()),
            ("crawlfleet-job", job_id_of(spider).encode()),
        ]
        self.write_counts()
        self.stats.set_value(STAT_FAILED, 0)
        servers = ",".join(self.servers)
        properties = self.producer_properties()
        try:
            if self.settings_error:
                raise ValueError(self.settings_error)
            producer = Producer(properties)
        except (KafkaException, ValueError, TypeError) as exc:
            logger.error(
                "Kafka producer settings are invalid (%s); check KAFKA_PRODUCER_CONFIG and "
                "the KAFKA_* timeouts. Closing the spider before crawling.",
                describe(exc),
            )
            self._mark_failed(REASON_MISCONFIGURED)
            raise CloseSpider(REASON_MISCONFIGURED) from exc
        try:
            await maybe_deferred_to_future(
                threads.deferToThread(wait_for_topic, producer, self.topic, self.startup_timeout)
            )
        except Exception as exc:
            logger.error(
                "Kafka is unavailable: cannot reach topic %r on %s within %ss (%s). "
                "Closing the spider before crawling so that no item is scraped without a sink.",
                self.topic,
                servers,
                self.startup_timeout,
                describe(exc),
            )
            self._mark_failed(REASON_UNAVAILABLE)
            raise CloseSpider(REASON_UNAVAILABLE) from exc
        self.producer = producer
        producer.poll(0)
        self._client_errors.clear()  # what start-up ran into is not news any more
        self._poller = task.LoopingCall(self._serve_reports)
        self._poller.start(self.poll_interval, now=False)
        self.stats.set_value("kafka/topic", self.topic)
        logger.info(
            "Sending items to Kafka topic %r on %s (acks=%s, idempotent=%s)",
            self.topic,
            servers,
            properties["acks"],
            properties["enable.idempotence"],
        )

    # --- items --------------------------------------------------------------------------------

    def process_item(self, item: Any) -> Any:
        self._items += 1
        producer = self.producer
        if producer is None:
            # open_spider failed and the spider is closing; items still in flight are not sent.
            self._count_failure(None, KafkaError(KafkaError._STATE, "producer not open"), False)
            return item
        key = stable_id(item)
        number = self._next_number
        self._next_number += 1
        try:
            self._produce(producer, number, key, encode_item(item))
        except Exception as exc:
            # Serialisation, an oversized record, a queue that stayed full: refused before sending.
            self._count_failure(key, exc, sent=False)
            return item
        self._pending[number] = key
        self._sent += 1
        if key is None:
            self.stats.inc_value("kafka/items_without_key")
        return item

    def _produce(self, producer: Producer, number: int, key: str | None, value: bytes) -> None:
        """Hand one message to librdkafka; while its local queue is full, wait for room."""
        deadline = time.monotonic() + self.delivery_timeout
        while True:
            try:
                producer.produce(
                    self.topic,
                    value=value,
                    key=None if key is None else key.encode(),
                    headers=self.headers,
                    on_delivery=partial(self._delivery_report, number),
                )
                return
            except BufferError:
                # Back-pressure: the broker takes items slower than the crawl makes them.
                if time.monotonic() >= deadline:
                    raise
                self.stats.inc_value("kafka/queue_full_waits")
                producer.poll(0.1)

    def _serve_reports(self) -> None:
        if self.producer is not None:
            self.producer.poll(0)

    def _delivery_report(self, number: int, error: KafkaError | None, _message: Message) -> None:
        key = self._pending.pop(number, _MISSING)
        if key is _MISSING:
            return  # already written off as unconfirmed at close
        if error is not None:
            self._count_failure(key, error, sent=True)
            return
        self._delivered += 1
        self._client_errors.clear()

    def _client_error_cb(self, error: KafkaError) -> None:
        """Cluster-wide trouble (brokers down, a fatal producer error): one line per kind until
        a delivery succeeds; the deliveries it fails are counted and logged by their reports."""
        if error.fatal():
            logger.error("Kafka producer failed for good: %s", describe(error))
        elif error.code() not in self._client_errors:
            logger.warning("Kafka: %s (deliveries are retried)", describe(error))
        self._client_errors.add(error.code())

    def _count_failure(
        self, key: str | None, error: BaseException | KafkaError, sent: bool
    ) -> None:
        """Count and log one failed item; close the spider when the threshold is crossed."""
        self._failed += 1
        failed = self._failed
        self.stats.set_value(STAT_FAILED, failed)
        crossed = failed > self.failure_threshold and not self._closing_for_failures
        if crossed:
            self._closing_for_failures = True
        if failed <= LOG_FIRST_FAILURES or failed % LOG_EVERY == 0:
            logger.error(
                "Kafka %s item %s to topic %r: %s (%d failed so far)",
                "did not deliver" if sent else "could not send",
                key or "(no id)",
                self.topic,
                describe(error),
                failed,
            )
        if crossed and not self._closing:
            # Not from inside the item (or report) being processed: on the next reactor turn.
            self._reactor.callLater(0, self._close_for_failures)

    def _close_for_failures(self) -> None:
        engine = self.crawler.engine
        if self._closing or engine is None or engine.spider is None:
            return
        logger.error(
            "More than %d Kafka deliveries failed: closing the spider (%s)",
            self.failure_threshold,
            REASON_DELIVERY_FAILED,
        )
        self._mark_failed(REASON_DELIVERY_FAILED)
        closing = deferred_from_coro(engine.close_spider_async(reason=REASON_DELIVERY_FAILED))
        closing.addErrback(lambda failure: logger.error("Closing the spider failed: %s", failure))

    def _mark_failed(self, reason: str) -> None:
        self.stats.set_value(STAT_OUTCOME, "failed")
        self.stats.set_value(STAT_FAILURE_REASON, reason)

    # --- closing ------------------------------------------------------------------------------

    async def close_spider(self) -> None:
        self._closing = True
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        producer, self.producer = self.producer, None
        if producer is None:
            self.write_counts()
            return
        # Every message expires within the delivery timeout of its produce(), so this bounds the
        # wait; the margin covers the last linger. Reports are served on the flushing thread.
        timeout = self.delivery_timeout + 5.0
        left = await maybe_deferred_to_future(threads.deferToThread(producer.flush, timeout))
        if left:
            logger.error("Kafka flush did not finish within %.0fs", timeout)
        unconfirmed = list(self._pending.values())
        self._pending.clear()
        producer.purge()  # nothing may be sent after this run has accounted for it
        producer.flush(0)
        if unconfirmed:
            self.stats.set_value(STAT_UNCONFIRMED, len(unconfirmed))
            unknown = KafkaError(KafkaError._TIMED_OUT, "delivery unconfirmed at close")
            for key in unconfirmed:
                self._count_failure(key, unknown, sent=True)
        self.write_counts()
        items, delivered, failed = self._items, self._delivered, self._failed
        if failed > self.failure_threshold:
            self._mark_failed(REASON_DELIVERY_FAILED)
            logger.error(
                "Kafka delivery failed for %d of %d items (threshold %d): the run has failed",
                failed,
                items,
                self.failure_threshold,
            )
        else:
            logger.info(
                "Kafka delivered %d of %d items to topic %r (%d failed)",
                delivered,
                items,
                self.topic,
                failed,
            )
