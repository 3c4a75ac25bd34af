"""Kafka sink: every item becomes one JSON message keyed by the item's stable id.

Delivery is asynchronous so that a slow or distant broker never slows the crawl: ``process_item``
hands the message to the producer and returns, and the producer's callbacks (on its own I/O
thread) count what the broker acknowledged and what it refused. Nothing is lost silently:

* every item handed to Kafka ends up counted once, in ``kafka/items_delivered`` or in
  ``kafka/items_failed`` (failures are logged with their cause). Delivered means acknowledged by
  every in-sync replica; failed means not acknowledged, which after a lost acknowledgement can
  still mean written, so consumers de-duplicate on the message key;
* ``close_spider`` waits for every outstanding delivery (bounded by ``KAFKA_DELIVERY_TIMEOUT``),
  and counts whatever is still unconfirmed after that as failed (``kafka/items_unconfirmed``);
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
``KAFKA_DELIVERY_TIMEOUT``   seconds a message may take to be acknowledged, retries included.
``KAFKA_STARTUP_TIMEOUT``    seconds to reach the cluster and the topic when the spider opens.
``KAFKA_PRODUCER_CONFIG``    extra ``KafkaProducer`` keyword arguments (security, compression).
``KAFKA_CLIENT_LOG_LEVEL``   level of the client library's own loggers (see below).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaError
from kafka.producer.future import FutureRecordMetadata, RecordMetadata
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, NotConfigured
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet import threads

from crawler.items import item_fields, stable_id
from crawler.pipelines.csv import job_id_of

logger = logging.getLogger(__name__)

REASON_UNAVAILABLE = "kafka_unavailable"
REASON_DELIVERY_FAILED = "kafka_delivery_failed"
REASON_MISCONFIGURED = "kafka_misconfigured"

# Individual failures are logged up to this many, then every LOG_EVERY-th: a dead broker fails
# every in-flight item at once, and one line per item would bury the cause.
LOG_FIRST_FAILURES = 10
LOG_EVERY = 100
# Batching window: a crawl yields items one by one, and a quarter of a second costs nothing next
# to a crawl. Most of the producer's CPU is per batch (a produce request and its answer on the I/O
# thread), so short windows cost the crawl: at ~300 items/s, 20 ms made 5-item batches and cost
# ~0.5 ms of CPU per item, 250 ms ~0.33 ms (bench/crawl_overhead.py, docs/PERFORMANCE.md).
LINGER_MS = 250

STAT_SENT = "kafka/items_sent"
STAT_DELIVERED = "kafka/items_delivered"
STAT_FAILED = "kafka/items_failed"
STAT_UNCONFIRMED = "kafka/items_unconfirmed"
STAT_OUTCOME = "crawlfleet/outcome"
STAT_FAILURE_REASON = "crawlfleet/failure_reason"

_MISSING: Any = object()  # "not pending": a send number that was already accounted for


def _servers(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value or () if str(part).strip()]


def _json_default(value: Any) -> Any:
    # Dates, Decimals, sets and the like: readable rather than a failed item.
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def describe(exc: BaseException) -> str:
    """``Type: message`` once (kafka-python's errors already start with their type name)."""
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def encode_item(item: Any) -> bytes:
    """The message value: the item's fields as UTF-8 JSON, keys sorted for stable output."""
    fields = item_fields(item)
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, default=_json_default).encode()


class KafkaPipeline:
    """Sends every item to Kafka and accounts for each one (see the module docstring)."""

    def __init__(
        self,
        crawler: Crawler,
        *,
        servers: list[str],
        failure_threshold: int,
        delivery_timeout: float,
        startup_timeout: float,
        producer_config: Mapping[str, Any],
    ) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.servers = servers
        self.failure_threshold = failure_threshold
        self.delivery_timeout = delivery_timeout
        self.startup_timeout = startup_timeout
        self.producer_config = dict(producer_config)
        self.producer: KafkaProducer | None = None
        self.topic = ""
        self.headers: list[tuple[str, bytes]] = []
        # Written by the producer's I/O thread, read by the reactor thread: guarded by _lock.
        self._lock = threading.Lock()
        self._pending: dict[int, str | None] = {}  # send number -> stable id, until confirmed
        self._next_number = 0
        self._items = 0  # items that reached this pipeline: delivered + failed in the end
        self._sent = 0
        self._delivered = 0
        self._failed = 0
        self._closing_for_failures = False
        self._closing = False  # close_spider has begun: no more early closes
        self._reactor: Any = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> KafkaPipeline:
        settings = crawler.settings
        servers = _servers(settings.get("KAFKA_BOOTSTRAP_SERVERS", ""))
        if not servers:
            raise NotConfigured("KAFKA_BOOTSTRAP_SERVERS is empty")
        level = settings.get("KAFKA_CLIENT_LOG_LEVEL", "CRITICAL")
        # kafka-python logs every refused connection, and even the auto-creation of a topic, at
        # ERROR. Scrapy counts those as crawl errors, so by default they are muted and this
        # pipeline reports what matters (unreachable cluster, failed deliveries) with the cause.
        logging.getLogger("kafka").setLevel(level.upper() if isinstance(level, str) else level)
        return cls(
            crawler,
            servers=servers,
            failure_threshold=settings.getint("KAFKA_FAILURE_THRESHOLD", 0),
            delivery_timeout=settings.getfloat("KAFKA_DELIVERY_TIMEOUT", 60.0),
            startup_timeout=settings.getfloat("KAFKA_STARTUP_TIMEOUT", 10.0),
            producer_config=settings.getdict("KAFKA_PRODUCER_CONFIG", {}),
        )

    # --- opening ------------------------------------------------------------------------------

    def _producer_kwargs(self) -> dict[str, Any]:
        delivery_ms = max(1000, int(self.delivery_timeout * 1000))
        startup_ms = max(1000, int(self.startup_timeout * 1000))
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": f"crawlfleet-{self.crawler.spider.name}",
            # Durability first: every in-sync replica has the message before it counts, and the
            # idempotent producer (kafka-python's default, kept when the broker supports it)
            # makes its retries write each message once.
            "acks": "all",
            "linger_ms": LINGER_MS,
            "delivery_timeout_ms": delivery_ms,
            # The client insists that one request (plus the linger) fits in the delivery deadline.
            "request_timeout_ms": min(30000, delivery_ms - LINGER_MS - 1),
            "bootstrap_timeout_ms": startup_ms,
            # send() blocks only while the topic's metadata is unknown; after open_spider it is
            # known, so this only bounds the start-up check below.
            "max_block_ms": startup_ms,
        }
        kwargs.update(self.producer_config)
        return kwargs

    def _connect(self) -> KafkaProducer:
        """Build the producer and make sure the topic is there (blocking: run in a thread)."""
        producer = KafkaProducer(**self._producer_kwargs())
        try:
            partitions = producer.partitions_for(self.topic)
            if not partitions:
                raise KafkaError(f"topic {self.topic!r} has no partitions")
        except BaseException:
            producer.close(timeout=0)
            raise
        return producer

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
        for key in (STAT_SENT, STAT_DELIVERED, STAT_FAILED):
            # Created here, on the reactor thread, so the producer thread only ever updates them.
            self.stats.set_value(key, 0)
        servers = ",".join(self.servers)
        try:
            self.producer = await maybe_deferred_to_future(threads.deferToThread(self._connect))
        except (KafkaConfigurationError, ValueError, TypeError) as exc:
            logger.error(
                "Kafka producer settings are invalid (%s); check KAFKA_PRODUCER_CONFIG and "
                "the KAFKA_* timeouts. Closing the spider before crawling.",
                describe(exc),
            )
            self._mark_failed(REASON_MISCONFIGURED)
            raise CloseSpider(REASON_MISCONFIGURED) from exc
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
        idempotent = bool(self.producer.config.get("enable_idempotence"))
        self.stats.set_value("kafka/topic", self.topic)
        logger.info(
            "Sending items to Kafka topic %r on %s (acks=all, idempotent=%s)",
            self.topic,
            servers,
            idempotent,
        )

    # --- items --------------------------------------------------------------------------------

    def process_item(self, item: Any) -> Any:
        self._items += 1
        if self.producer is None:
            # open_spider failed and the spider is closing; items still in flight are not sent.
            self._count_failure(None, KafkaError("producer not open"), sent=False)
            return item
        key = stable_id(item)
        with self._lock:
            number = self._next_number
            self._next_number += 1
        try:
            value = encode_item(item)
            future: FutureRecordMetadata = self.producer.send(
                self.topic,
                key=None if key is None else key.encode(),
                value=value,
                headers=list(self.headers),
            )
        except Exception as exc:
            # Serialisation, an oversized record, a closed producer: refused before sending.
            self._count_failure(key, exc, sent=False)
            return item
        with self._lock:
            self._pending[number] = key
            self._sent += 1
            self.stats.set_value(STAT_SENT, self._sent)
        future.add_callback(self._delivered_cb, number)
        future.add_errback(self._failed_cb, number)
        if key is None:
            self.stats.inc_value("kafka/items_without_key")
        return item

    def _delivered_cb(self, number: int, _metadata: RecordMetadata) -> None:
        with self._lock:
            if self._pending.pop(number, _MISSING) is _MISSING:
                return  # already written off as unconfirmed at close
            self._delivered += 1
            self.stats.set_value(STAT_DELIVERED, self._delivered)

    def _failed_cb(self, number: int, exc: BaseException) -> None:
        with self._lock:
            key = self._pending.pop(number, _MISSING)
            if key is _MISSING:
                return
        self._count_failure(key, exc, sent=True)

    def _count_failure(self, key: str | None, exc: BaseException, *, sent: bool) -> None:
        """Count and log one failed item; close the spider when the threshold is crossed."""
        with self._lock:
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
                describe(exc),
                failed,
            )
        if crossed and not self._closing:
            # Usually called on the producer's thread; the engine is driven from the reactor's.
            self._reactor.callFromThread(self._close_for_failures)

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
        producer, self.producer = self.producer, None
        if producer is None:
            return
        # Every record expires within the delivery timeout of its send(), so this bounds the wait;
        # the margin covers the last linger and the producer's own bookkeeping.
        timeout = self.delivery_timeout + 5.0
        try:
            await maybe_deferred_to_future(threads.deferToThread(producer.flush, timeout))
        except KafkaError as exc:
            logger.error("Kafka flush did not finish within %.0fs: %s", timeout, describe(exc))
        await maybe_deferred_to_future(threads.deferToThread(producer.close, 0))
        with self._lock:
            unconfirmed = list(self._pending.values())
            self._pending.clear()
        if unconfirmed:
            self.stats.set_value(STAT_UNCONFIRMED, len(unconfirmed))
            for key in unconfirmed:
                self._count_failure(key, KafkaError("delivery unconfirmed at close"), sent=True)
        with self._lock:
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
