"""Which poller replicas are alive, so they can split the fleet between them."""

from __future__ import annotations

from django.db import models


class PollerReplica(models.Model):
    """One running poller. It renews ``expires_at`` every cycle and deletes its row when it
    stops; a row past ``expires_at`` is a replica that died without stopping, and no longer
    counts. ``node_ids`` is the share it polled in its last cycle, for operators."""

    name = models.CharField(max_length=200, unique=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    node_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
