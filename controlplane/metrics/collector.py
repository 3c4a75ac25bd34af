"""The metric families, built from the database at every scrape.

prometheus_client's usual counters live in one process's memory: with several gunicorn workers
and several scheduler and poller replicas (on several hosts), each would hold its own share.
Here nothing is kept in a process. The collector reads the domain's tallies
(:mod:`controlplane.jobs.tallies`) and the loops' histograms (:mod:`controlplane.telemetry`)
and shapes them into families, so any worker of any replica answers the same numbers. It is
registered in a private registry, never the global one, so no process metric of whichever
worker answered creeps in.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from controlplane.alerts import tallies as alert_tallies
from controlplane.jobs import tallies
from controlplane.loops.shards import live_replicas
from controlplane.nodes.models import Node
from controlplane.scheduling.models import TaskRun
from controlplane.telemetry import histograms
from controlplane.telemetry.histograms import FIRE_TO_DISPATCH, POLL_CYCLE, Histogram

# Label values every series of a histogram should show from the start (zeros until observed).
KNOWN_LABELS: dict[str, list[dict[str, str]]] = {
    FIRE_TO_DISPATCH.name: [{"trigger": t} for t in TaskRun.Trigger.values],
    POLL_CYCLE.name: [{}],
}


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def job_families() -> Iterator[Metric]:
    counts = tallies.job_counts()
    jobs = _gauge("crawlfleet_jobs", "Jobs (attempts) in each state", ["state"])
    for state, n in counts.by_state.items():
        jobs.add_metric([state], n)
    yield jobs
    ended = CounterMetricFamily(
        "crawlfleet_jobs_ended",
        "Jobs that ended, by final state and cause (unknown: ended before causes were kept)",
        labels=["state", "cause"],
    )
    for (state, cause), n in sorted(counts.ended.items()):
        ended.add_metric([state, cause], n)
    yield ended
    runs = _gauge("crawlfleet_runs", "Task runs in each state", ["state"])
    for state, n in tallies.runs_by_state().items():
        runs.add_metric([state], n)
    yield runs
    depth = tallies.queue_depth()
    queued = _gauge(
        "crawlfleet_queue_depth", "Queued jobs waiting in the control plane for a node", ["project"]
    )
    backoff = _gauge(
        "crawlfleet_queue_backoff",
        "Queued jobs held until their retry backoff has passed (included in queue_depth)",
        ["project"],
    )
    for project, figures in sorted(depth.items()):
        queued.add_metric([project], figures.queued)
        backoff.add_metric([project], figures.backoff)
    yield queued
    yield backoff


def node_families() -> Iterator[Metric]:
    nodes = tallies.node_figures()
    families = {
        "up": _gauge("crawlfleet_node_up", "1 if the node answers its health checks", ["node"]),
        "state": _gauge(
            "crawlfleet_node_state", "1 for the node's current health state", ["node", "state"]
        ),
        "enabled": _gauge("crawlfleet_node_enabled", "1 if the node is enabled", ["node"]),
        "draining": _gauge(
            "crawlfleet_node_draining", "1 if the node is draining (no new jobs)", ["node"]
        ),
        "schedulable": _gauge(
            "crawlfleet_node_schedulable",
            "1 if the node takes new jobs now (enabled, not draining, up or degraded)",
            ["node"],
        ),
        "jobs": _gauge(
            "crawlfleet_node_jobs", "Jobs dispatching, pending or running on the node", ["node"]
        ),
        "capacity": _gauge(
            "crawlfleet_node_capacity", "Job slots of the node (Scrapyd max_proc)", ["node"]
        ),
        "latency": _gauge(
            "crawlfleet_node_health_check_seconds",
            "Duration of the node's last health check",
            ["node"],
        ),
        "seen": _gauge(
            "crawlfleet_node_last_seen_timestamp_seconds",
            "When the node last answered a health check (Unix time)",
            ["node"],
        ),
    }
    for node in nodes:
        name = [node.name]
        families["up"].add_metric(name, int(node.state in (Node.State.UP, Node.State.DEGRADED)))
        for state in Node.State.values:
            families["state"].add_metric([node.name, state], int(node.state == state))
        families["enabled"].add_metric(name, int(node.enabled))
        families["draining"].add_metric(name, int(node.draining))
        families["schedulable"].add_metric(name, int(node.schedulable))
        families["jobs"].add_metric(name, node.jobs)
        families["capacity"].add_metric(name, node.capacity)
        if node.latency is not None:
            families["latency"].add_metric(name, node.latency)
        if node.last_seen is not None:
            families["seen"].add_metric(name, node.last_seen.timestamp())
    yield from families.values()


def poller_families() -> Iterator[Metric]:
    replicas = live_replicas()
    count = _gauge("crawlfleet_poller_replicas", "Poller replicas alive, sharing the nodes", [])
    count.add_metric([], len(replicas))
    yield count
    share = _gauge(
        "crawlfleet_poller_replica_nodes",
        "Nodes the poller replica polled in its last cycle (its share of the fleet)",
        ["replica"],
    )
    for replica in replicas:
        share.add_metric([replica.name], len(replica.node_ids or []))
    yield share


def task_families() -> Iterator[Metric]:
    labels = ["project", "task"]
    items = CounterMetricFamily(
        "crawlfleet_task_items", "Items scraped by the task's ended jobs", labels=labels
    )
    pages = CounterMetricFamily(
        "crawlfleet_task_pages", "Pages downloaded by the task's ended jobs", labels=labels
    )
    last_items = _gauge(
        "crawlfleet_task_last_success_items",
        "Items of the task's newest successful run (its successful jobs)",
        labels,
    )
    last_at = _gauge(
        "crawlfleet_task_last_success_timestamp_seconds",
        "When the task's newest successful run ended (Unix time)",
        labels,
    )
    for task in tallies.task_figures():
        key = [task.project, task.task]
        items.add_metric(key, task.items)
        pages.add_metric(key, task.pages)
        if task.last_success_items is not None:
            last_items.add_metric(key, task.last_success_items)
        if task.last_success_at is not None:
            last_at.add_metric(key, task.last_success_at.timestamp())
    yield from (items, pages, last_items, last_at)


def histogram_families(wanted: tuple[Histogram, ...]) -> Iterator[Metric]:
    found = histograms.read(wanted)
    for histogram in wanted:
        family = HistogramMetricFamily(
            histogram.name, histogram.documentation, labels=list(histogram.labelnames)
        )
        series = {histograms.label_key(s.labels): s for s in found[histogram.name]}
        for labels in KNOWN_LABELS.get(histogram.name, []):
            series.setdefault(histograms.label_key(labels), histograms.Series(labels))
        for _key, one in sorted(series.items()):
            buckets = dict(one.buckets)
            cumulative = [(floatToGoString(le), buckets.get(le, 0)) for le in histogram.buckets]
            family.add_metric(
                [one.labels.get(name, "") for name in histogram.labelnames],
                [*cumulative, ("+Inf", one.count)],
                sum_value=one.total,
            )
        yield family


def alert_families() -> Iterator[Metric]:
    deliveries = _gauge(
        "crawlfleet_alert_deliveries",
        "Alert deliveries kept (CRAWLFLEET_ALERT_KEEP_DAYS), by state and channel kind",
        ["state", "channel_kind"],
    )
    for (state, kind), n in sorted(alert_tallies.deliveries_by_state_and_kind().items()):
        deliveries.add_metric([state, kind], n)
    yield deliveries
    waiting = _gauge(
        "crawlfleet_alert_events_unrouted",
        "Events raised but not yet routed to deliveries (grows while no sender runs)",
        [],
    )
    waiting.add_metric([], alert_tallies.unrouted_events())
    yield waiting


class FleetCollector(Collector):
    """Every crawlfleet metric, read fresh from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from job_families()
        yield from node_families()
        yield from poller_families()
        yield from task_families()
        yield from histogram_families((FIRE_TO_DISPATCH, POLL_CYCLE))
        yield from alert_families()


def fleet_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    return registry


REGISTRY = fleet_registry()
