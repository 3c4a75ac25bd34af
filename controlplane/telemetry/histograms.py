"""Histograms whose counters live in the database: observed by any replica, read by the web.

An observation is one statement, ``UPDATE ... SET count = count + 1, total = total + x WHERE
metric = .. AND labels = .. AND le >= x``: every bucket at or above the value (``+inf``
included) counts it. The rows of a series are created on its first use in a process, with an
insert that ignores rows already there (a unique constraint), so replicas racing to create them
end with one set. Nothing is ever reset: the numbers survive restarts and add up across
replicas, which is what Prometheus expects of a histogram's counters.

A failed write is logged and dropped; a measurement must never stop a loop. Changing a
histogram's buckets would mix old and new counts: give it a new name instead.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import DatabaseError, transaction
from django.db.models import Case, F, Value, When

from controlplane.telemetry.models import HistogramBucket

logger = logging.getLogger(__name__)

INF = math.inf

# (metric, labels) whose rows this process has created (or found) already.
_ensured: set[tuple[str, str]] = set()
_ensured_lock = threading.Lock()


def label_key(labels: dict[str, str]) -> str:
    """The canonical form a label set is stored under."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


@dataclass
class Series:
    """One label set of a histogram as read back: cumulative finite buckets, count, sum."""

    labels: dict[str, str]
    buckets: list[tuple[float, int]] = field(default_factory=list)
    count: int = 0
    total: float = 0.0


@dataclass(frozen=True)
class Histogram:
    name: str
    documentation: str
    buckets: tuple[float, ...]  # finite upper bounds, ascending; +Inf is implied
    labelnames: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(set(self.buckets)) or INF in self.buckets:
            raise ValueError(f"{self.name}: buckets must be finite, distinct and ascending")
        REGISTRY[self.name] = self

    @property
    def bounds(self) -> tuple[float, ...]:
        return (*self.buckets, INF)

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation (e.g. seconds) under ``labels``."""
        self.observe_many([value], **labels)

    def observe_many(self, values: Iterable[float], **labels: str) -> None:
        """Count several observations of one label set in one statement."""
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, not {tuple(labels)}")
        # A clock a little behind would give a negative duration; NaN is no measurement.
        observed = [max(0.0, float(v)) for v in values if not math.isnan(v)]
        if not observed:
            return
        key = label_key({name: str(value) for name, value in labels.items()})
        try:
            with transaction.atomic():  # a savepoint inside a caller's transaction
                if (self.name, key) not in _ensured:
                    self._create_rows(key)
                if self._add(key, observed) == 0:  # rows gone since (a database reset)
                    self._create_rows(key)
                    self._add(key, observed)
        except DatabaseError:
            logger.warning("could not record %s%s", self.name, key, exc_info=True)

    def _create_rows(self, key: str) -> None:
        HistogramBucket.objects.bulk_create(
            [HistogramBucket(metric=self.name, labels=key, le=le) for le in self.bounds],
            ignore_conflicts=True,
        )
        with _ensured_lock:
            _ensured.add((self.name, key))

    def _add(self, key: str, values: list[float]) -> int:
        rows = HistogramBucket.objects.filter(metric=self.name, labels=key)
        if len(values) == 1:
            value = values[0]
            return rows.filter(le__gte=value).update(count=F("count") + 1, total=F("total") + value)
        # Several at once: each bucket adds how many of them (and their sum) it holds.
        counts, sums = [], []
        for le in self.bounds:
            inside = [v for v in values if v <= le]
            counts.append(When(le=le, then=Value(len(inside))))
            sums.append(When(le=le, then=Value(float(sum(inside)))))
        return rows.filter(le__in=self.bounds).update(
            count=F("count") + Case(*counts, default=Value(0)),
            total=F("total") + Case(*sums, default=Value(0.0)),
        )


REGISTRY: dict[str, Histogram] = {}


def read(histograms: Iterable[Histogram]) -> dict[str, list[Series]]:
    """Every series of these histograms, in one query. Only the buckets a histogram defines now
    are shown, so rows of bounds it no longer has are left out."""
    wanted = {h.name: h for h in histograms}
    found: dict[str, dict[str, Series]] = {name: {} for name in wanted}
    rows = (
        HistogramBucket.objects.filter(metric__in=wanted)
        .order_by("metric", "labels", "le")
        .values_list("metric", "labels", "le", "count", "total")
    )
    for metric, labels, le, count, total in rows:
        if le not in wanted[metric].bounds:
            continue
        series = found[metric].get(labels)
        if series is None:
            series = found[metric][labels] = Series(json.loads(labels))
        if le == INF:
            series.count, series.total = count, total
        else:
            series.buckets.append((le, count))
    return {name: list(by_labels.values()) for name, by_labels in found.items()}


# --- the histograms the loops record -------------------------------------------------------------
FIRE_TO_DISPATCH = Histogram(
    "crawlfleet_fire_to_dispatch_seconds",
    "Time from a run's fire (its scheduled time) to its job's acceptance by a node; first "
    "attempts only",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
    labelnames=("trigger",),
)
POLL_CYCLE = Histogram(
    "crawlfleet_poll_cycle_seconds",
    "Duration of one poller cycle (every node polled, then the sweeps), all replicas together",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
