"""One of two poller replicas SIGKILLed while jobs run on every node.

The two replicas split the three nodes between them. The one that owns a node is killed
without a chance to leave, so its row stays until it expires (three poll intervals, 3 s here).
Then the survivor takes its nodes: it polls the whole fleet, the dead replica's row is pruned,
and every job, those on the dead replica's nodes included, is tracked to ``succeeded`` with no
job lost and none retried.
"""

from __future__ import annotations

import signal

import pytest
from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.loops.models import PollerReplica
from controlplane.nodes.models import Node
from tests.chaos.helpers import assert_one_live_attempt_per_shard, wait_for
from tests.fixtures.fleet import make_task, start_run

pytestmark = [pytest.mark.chaos, pytest.mark.scrapyd, pytest.mark.slow]

NAMES = ("poller-a", "poller-b")


def shares() -> dict[str, set[int]]:
    live = PollerReplica.objects.filter(expires_at__gte=timezone.now())
    return {row.name: set(row.node_ids) for row in live}


def test_a_killed_poller_replicas_nodes_go_to_the_survivor_and_every_job_ends(
    fleet, cp_web, cp_process
):
    every = {row.pk for row in fleet.rows}
    processes = [cp_process("scheduler", name="scheduler")]
    pollers = {name: cp_process("poller", "--name", name, name=name) for name in NAMES}
    processes += pollers.values()

    def split() -> dict[str, set[int]] | None:
        # Replicas starting together may each poll everything for a cycle, until both see both.
        found = shares()
        if set(found) != set(NAMES) or found[NAMES[0]] & found[NAMES[1]]:
            return None
        return found if found[NAMES[0]] | found[NAMES[1]] == every else None

    found = wait_for(split, timeout=30, what="the fleet split between two pollers",
                     processes=processes)  # fmt: skip
    victim = max(NAMES, key=lambda name: len(found[name]))  # owns at least two of the three
    survivor = next(name for name in NAMES if name != victim)

    # One crawl per node (least-loaded placement), long enough to outlive the takeover.
    task = make_task(fleet, "sleepy", max_attempts=1, args={"seconds": "8"})
    runs = [start_run(task) for _ in fleet.rows]

    def all_running() -> bool:
        jobs = Job.objects.filter(run__in=runs)
        return jobs.count() == 3 and all(job.state == Job.State.RUNNING for job in jobs)

    wait_for(all_running, timeout=40, what="a crawl running on every node", processes=processes)
    on_victims = Job.objects.filter(run__in=runs, node_id__in=found[victim])
    assert on_victims.count() == len(found[victim]) >= 2

    pollers[victim].signal_group(signal.SIGKILL)
    pollers[victim].proc.wait(timeout=10)
    killed_at = timezone.now()
    processes.remove(pollers[victim])

    def taken_over() -> bool:
        return shares() == {survivor: every}

    wait_for(taken_over, timeout=20, what="the survivor polling every node", processes=processes)
    assert set(PollerReplica.objects.values_list("name", flat=True)) == {survivor}  # pruned

    def ended() -> bool:
        assert_one_live_attempt_per_shard()
        return not Job.objects.filter(run__in=runs).exclude(state__in=Job.FINAL).exists()

    wait_for(ended, timeout=60, what="every job ended", processes=processes)
    jobs = list(Job.objects.filter(run__in=runs))
    assert [job.state for job in jobs] == [Job.State.SUCCEEDED] * 3, [j.reason for j in jobs]
    assert not Job.objects.filter(retry_of__in=jobs).exists()
    # The dead replica's nodes are checked again, by the survivor.
    for node in Node.objects.filter(pk__in=found[victim]):
        assert node.last_checked > killed_at
        assert node.state == Node.State.UP
    log = pollers[survivor].log_tail(10**6)
    assert "nodes shared among 2 poller replica(s)" in log
    assert "nodes shared among 1 poller replica(s)" in log
