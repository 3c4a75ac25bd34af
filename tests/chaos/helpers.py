"""What the chaos tests share: watching processes die, waiting on the control plane's processes,
reading a run's Kafka messages, and the invariants every case asserts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.jobs.models import Job
from controlplane.lib.procutil import ManagedProcess
from tests.fixtures.fleet import describe_jobs


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeathWatch:
    """Records when a process is first seen dead, sampling every 20 ms on a thread of its own.

    The time recorded is an upper bound of the real death, so "it died before X started" checked
    against it is never more lenient than the truth.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.died_at: datetime | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while pid_alive(self.pid):
            time.sleep(0.02)
        self.died_at = utcnow()

    def wait(self, timeout: float) -> datetime:
        self._thread.join(timeout)
        assert self.died_at is not None, f"process {self.pid} still alive after {timeout}s"
        return self.died_at


def wait_for(
    check: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    processes: Iterable[ManagedProcess] = (),
    interval: float = 0.2,
) -> Any:
    """Poll ``check`` while the control-plane processes keep running; its truthy value."""
    processes = list(processes)
    deadline = time.monotonic() + timeout
    while not (result := check()):
        for proc in processes:
            assert proc.alive(), f"{proc.name} died:\n{proc.log_tail()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s; jobs:\n{describe_jobs()}"
        time.sleep(interval)
    return result


def assert_one_live_attempt_per_shard() -> None:
    """The control plane never tracks two unfinished attempts of one shard of one run."""
    live = Counter(
        (run, shard)
        for run, shard in Job.objects.exclude(state__in=Job.FINAL).values_list("run_id", "shard")
    )
    doubled = {key: count for key, count in live.items() if count > 1}
    assert not doubled, f"two live attempts of one shard: {doubled}\n{describe_jobs()}"


def exit_record(node: Any, job: Job) -> dict[str, Any]:
    """The Scrapyd exit record of ``job`` on ``node`` once its process has ended."""
    return node.job_exit(job.scrapyd_job_id, timeout=30)


def started_at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["start_time"])


@dataclass
class TopicContents:
    """A topic's messages, grouped by the Scrapyd job that sent them (the ``crawlfleet-job``
    header), each as the list of its keys (the items' stable ids)."""

    by_job: dict[str, list[str]] = field(default_factory=dict)
    # When each job's messages were produced (the producer's timestamps): first and last.
    produced: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)

    @classmethod
    def read(cls, broker: Any, topic: str) -> TopicContents:
        contents = cls()
        for record in broker.consume_all(topic):
            job = dict(record.headers)["crawlfleet-job"].decode()
            contents.by_job.setdefault(job, []).append(record.key.decode())
            at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
            first, last = contents.produced.get(job, (at, at))
            contents.produced[job] = (min(first, at), max(last, at))
        return contents

    def keys(self) -> set[str]:
        return {key for keys in self.by_job.values() for key in keys}


def assert_delivered_once(contents: TopicContents, job: Job, expected_keys: set[str]) -> None:
    """The job's own messages hold every expected item exactly once, as its stats say."""
    keys = contents.by_job.get(job.scrapyd_job_id, [])
    doubled = [key for key, count in Counter(keys).items() if count > 1]
    assert not doubled, f"job {job.pk} delivered {len(doubled)} item(s) twice: {doubled[:5]}"
    assert set(keys) == expected_keys, (
        f"job {job.pk}: {len(expected_keys - set(keys))} item(s) missing, "
        f"{len(set(keys) - expected_keys)} unexpected"
    )
    stats = job.stats or {}
    assert stats.get("kafka/items_delivered") == len(keys), stats
    assert stats.get("kafka/items_failed") == 0, stats
    assert stats.get("item_scraped_count") == len(keys), stats


def slow_kafka_books_task(fleet: Any, site: Any, broker: Any, topic: str) -> Any:
    """A books crawl slow enough (about 30 s) to outlive the loss of its node, sending every
    item to ``topic``; retried once. Uses the site's config as it is (``delay`` set here)."""
    from tests.fixtures.fleet import make_task

    site.config.delay = 1.0
    return make_task(
        fleet,
        "books",
        max_attempts=2,
        args={"start_url": f"{site.base_url}/catalogue/page-1.html"},
        settings={
            "CRAWLFLEET_CSV_DIR": "",
            "CONCURRENT_REQUESTS_PER_DOMAIN": "2",
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KAFKA_TOPIC": topic,
        },
        error_threshold=1000,
    )


@dataclass
class VictimCrawl:
    """A slow Kafka books crawl running on ``victim``, the one node open when it started; the
    ``others`` are open again by the time this is returned, ready to take the retry."""

    victim: Any
    others: list[Any]
    fleet: Any
    other_rows: list[int]
    expected: set[str]
    processes: list[ManagedProcess]
    run: Any
    job: Job
    site: Any

    def finish(self) -> None:
        """Let the site answer at full speed and wait for the run to close, checking on the way
        that no shard ever has two live attempts."""
        from tests.fixtures.fleet import run_closed

        self.site.config.delay = 0.0
        wait_for(
            lambda: assert_one_live_attempt_per_shard() or run_closed(self.run)(),
            timeout=90,
            what="closed run",
            processes=self.processes,
        )


def start_crawl_on_victim(
    scrapyd_nodes: Any, crawler_egg: Any, site: Any, broker: Any, topic: str, cp_process: Any
) -> VictimCrawl:
    """Three nodes, a scheduler and a poller that declare a node lost 2 s after it stops
    answering (5 s in the other process tests), and a run whose attempt sends items from the
    first node; waits until it has put a few in Kafka."""
    from controlplane.nodes.models import Node
    from demo.bookshop import Book
    from tests.fixtures.fleet import register_fleet, start_run

    victim, *others = scrapyd_nodes(3, max_proc=2, poll_interval=0.2)
    for node in (victim, *others):
        node.deploy(crawler_egg)
    fleet = register_fleet([victim, *others], crawler_egg)
    other_rows = [fleet.row(n).pk for n in others]
    broker.create_topic(topic)
    expected = {Book(n).upc for n in range(1, site.config.books + 1)}
    task = slow_kafka_books_task(fleet, site, broker, topic)
    Node.objects.filter(pk__in=other_rows).update(enabled=False)
    fast_loss = {"CRAWLFLEET_NODE_LOST_GRACE": "2"}
    processes = [
        cp_process("scheduler", name="scheduler", env=fast_loss),
        cp_process("poller", name="poller", env=fast_loss),
    ]
    run = start_run(task)
    job = run.jobs.get()

    def sent_some_items() -> bool:
        job.refresh_from_db()
        beating = job.state == Job.State.RUNNING and job.last_heartbeat is not None
        return beating and len(TopicContents.read(broker, topic).keys()) >= 3

    wait_for(sent_some_items, timeout=60, what="items in Kafka", processes=processes)
    assert job.node_id == fleet.row(victim).pk
    Node.objects.filter(pk__in=other_rows).update(enabled=True)
    return VictimCrawl(victim, others, fleet, other_rows, expected, processes, run, job, site)
