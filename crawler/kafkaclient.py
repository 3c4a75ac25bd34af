"""The librdkafka side of the Kafka sink: producer properties, start-up checks, error text.

Kept apart from the pipeline (``crawler/pipelines/kafka.py``), which is about accounting for
every item; nothing here touches Scrapy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

# librdkafka's own log (connection attempts, broker state), muted by default: see the pipeline.
client_logger = logging.getLogger("librdkafka")

# Batching window. librdkafka batches on its own threads, so a longer window costs the crawl
# nothing; it only saves produce requests (and broker CPU) at the price of later delivery.
LINGER_MS = 100
# Seconds between two servings of delivery reports (``KAFKA_POLL_INTERVAL``).
POLL_INTERVAL = 0.1
# Topic states worth waiting out at start-up: a topic being auto-created has no leader yet.
_TOPIC_NOT_READY = {KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}


def bootstrap_servers(value: Any) -> list[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` as a list, from a comma-separated string or a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part).strip() for part in value or () if str(part).strip()]


def describe(error: BaseException | KafkaError) -> str:
    """``NAME: message`` for librdkafka's errors, ``Type: message`` for any other exception."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def parse_seconds(name: str, raw: Any) -> float:
    """A duration setting in seconds: a finite number above 0, or ValueError naming the setting
    and the value found.

    Zero, a negative number or a typo would otherwise reach librdkafka (or the reactor) and fail
    later with a cause that names neither; a poll interval of zero would serve delivery reports
    on every reactor turn."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a number of seconds above 0, got {raw!r}")
    return value


def parse_count(name: str, raw: Any) -> int:
    """A count setting: a whole number of 0 or more, or ValueError naming the setting."""
    try:
        value = int(str(raw).strip()) if not isinstance(raw, bool) else -1
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a whole number of 0 or more, got {raw!r}")
    return value


def producer_properties(
    servers: list[str],
    *,
    client_id: str,
    delivery_timeout: float,
    error_cb: Callable[[KafkaError], None],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """librdkafka properties: durability first, then ``extra`` (KAFKA_PRODUCER_CONFIG) over them."""
    return {
        "bootstrap.servers": ",".join(servers),
        "client.id": client_id,
        # Every in-sync replica has the message before it counts, and the idempotent
        # producer makes librdkafka's retries write each message once, in order.
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": LINGER_MS,
        # A message not acknowledged this long after produce() is reported failed.
        "message.timeout.ms": max(1000, int(delivery_timeout * 1000)),
        "logger": client_logger,
        "error_cb": error_cb,
        **extra,
    }


def wait_for_topic(producer: Producer, topic_name: str, timeout: float) -> None:
    """Until the topic has partitions with leaders; raises when ``timeout`` runs out (blocking:
    run it in a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        metadata = producer.list_topics(topic_name, timeout=max(0.1, remaining))
        topic = metadata.topics.get(topic_name)
        error = None if topic is None else topic.error
        if topic is not None and error is None and topic.partitions:
            return
        if error is not None and error.code() not in _TOPIC_NOT_READY:
            raise KafkaException(error)
        if time.monotonic() + 0.2 >= deadline:
            raise KafkaException(error) if error else ValueError("the topic has no partitions")
        time.sleep(0.2)
