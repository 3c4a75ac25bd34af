"""One row per bucket of a histogram series: a cumulative counter, added to in place."""

from __future__ import annotations

from django.db import models


class HistogramBucket(models.Model):
    """Observations of ``metric`` with ``labels`` that were at most ``le`` (``+inf``: all).

    ``count`` is the bucket's cumulative count, ``total`` the sum of those observations, so the
    ``+inf`` row holds the histogram's count and sum. Rows are only ever added to (by a
    conditional ``UPDATE ... SET count = count + 1 WHERE le >= x``), never reset or deleted, so
    they stay monotonic across restarts and add up across replicas.
    """

    metric = models.CharField(max_length=100)
    # The label set as canonical JSON (sorted keys), e.g. {"trigger": "cron"}.
    labels = models.CharField(max_length=300, default="{}")
    le = models.FloatField(help_text="upper bound of the bucket; inf for the +Inf bucket")
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            # Rows are created on first use by whichever process observes first: the constraint
            # makes a racing second insert a no-op (ON CONFLICT DO NOTHING).
            models.UniqueConstraint(fields=["metric", "labels", "le"], name="histogram_bucket_key")
        ]

    def __str__(self) -> str:
        return f"{self.metric}{self.labels} le={self.le}: {self.count}"
