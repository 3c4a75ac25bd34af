"""Counts of the alert queue for /metrics: deliveries by state and channel kind, and the
events still waiting to be routed (a number that only grows when no sender runs)."""

from __future__ import annotations

from django.db.models import Count

from controlplane.alerts.models import AlertEvent, Channel, Delivery


def deliveries_by_state_and_kind() -> dict[tuple[str, str], int]:
    """Every (state, channel kind) pair, zeros included, over the deliveries kept."""
    counts = {(state, kind): 0 for state in Delivery.State.values for kind in Channel.Kind.values}
    rows = Delivery.objects.values_list("state", "channel__kind").annotate(n=Count("pk"))
    for state, kind, n in rows.order_by():
        counts[(state, kind)] = n
    return counts


def unrouted_events() -> int:
    return AlertEvent.objects.filter(routed_at__isnull=True).count()
