"""Poller replicas share the fleet (controlplane.loops.shards), against three real Scrapyd nodes.

Each replica here is an in-process :class:`Poller` with a name of its own, so the split is known
in advance from the node ids: the names are picked so that each replica owns at least one node.
The process-level cases (two ``crawlfleet poller`` processes, one SIGKILLed mid-job) are in
tests/chaos/test_poller_kill.py and tests/integration/test_metrics_fleet.py.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.jobs.onnode import RoundJobs
from controlplane.lib import rendezvous
from controlplane.loops.models import PollerReplica
from controlplane.loops.poller import Poller
from controlplane.loops.shards import Membership, live_replicas
from controlplane.nodes.models import Node
from tests.fixtures.common import VENV_BIN
from tests.fixtures.dashboard import logged_in_client
from tests.fixtures.fleet import Fleet
from tests.fixtures.metrics import by_label, parse

pytestmark = [pytest.mark.scrapyd]


def names_that_split(fleet: Fleet, count: int = 2) -> list[str]:
    """Replica names under which every replica owns at least one of the fleet's nodes."""
    keys = [str(row.pk) for row in fleet.rows]
    for attempt in itertools.count():
        names = [f"replica-{chr(97 + i)}{attempt}" for i in range(count)]
        if all(rendezvous.share(keys, names, name) for name in names):
            return names
    raise AssertionError("unreachable")


def owned(fleet: Fleet, names: list[str], name: str) -> list[str]:
    return sorted(r.name for r in fleet.rows if rendezvous.owner(str(r.pk), names) == name)


@pytest.fixture
def replicas(fleet, settings):
    # Long enough that no row expires between two cycles on a loaded machine; expiry itself is
    # made to happen by moving a row's expires_at back (a_replica_not_heard_from...).
    settings.CRAWLFLEET_POLL_REPLICA_TIMEOUT = 60.0
    made: list[Poller] = []

    def make(name: str) -> Poller:
        made.append(Poller(name=name))
        return made[-1]

    yield make
    for poller in made:
        poller.close()


def test_two_replicas_poll_disjoint_shares_that_cover_the_fleet(fleet, replicas):
    names = names_that_split(fleet)
    a, b = replicas(names[0]), replicas(names[1])
    every = sorted(row.name for row in fleet.rows)
    assert a.cycle().polled == every  # alone so far: the whole fleet

    first_b = b.cycle()
    assert first_b.replicas == sorted(names)
    assert first_b.polled == owned(fleet, names, b.membership.name)
    before = {row.pk: row.last_checked for row in Node.objects.all()}
    round_a, round_b = a.cycle(), b.cycle()
    assert round_a.replicas == round_b.replicas == sorted(names)
    assert round_a.polled == owned(fleet, names, names[0])
    assert round_b.polled == owned(fleet, names, names[1])
    assert set(round_a.polled).isdisjoint(round_b.polled)
    assert sorted(round_a.polled + round_b.polled) == every
    # Every node was checked in the round, by the one replica that owns it.
    assert all(row.last_checked > before[row.pk] for row in Node.objects.all())
    shares = dict(PollerReplica.objects.values_list("name", "node_ids"))
    by_name = {row.pk: row.name for row in fleet.rows}
    assert {name: sorted(by_name[pk] for pk in ids) for name, ids in shares.items()} == {
        names[0]: round_a.polled,
        names[1]: round_b.polled,
    }


def test_a_replica_reads_the_jobs_of_its_own_share_only(fleet, replicas, monkeypatch):
    names = names_that_split(fleet)
    a, b = replicas(names[0]), replicas(names[1])
    a.cycle()
    b.cycle()
    read: list[list[int] | None] = []
    real_read = RoundJobs.read.__func__

    def spy(cls, node_ids=None):
        read.append(node_ids)
        return real_read(cls, node_ids)

    monkeypatch.setattr(RoundJobs, "read", classmethod(spy))
    a.cycle()
    b.cycle()
    once = Poller(shard=False)
    try:
        once.cycle()  # a one-off cycle reads every node's
    finally:
        once.close()
    by_name = {row.name: row.pk for row in fleet.rows}
    assert read == [
        sorted(by_name[name] for name in owned(fleet, names, names[0])),
        sorted(by_name[name] for name in owned(fleet, names, names[1])),
        None,
    ]


def test_a_replica_that_stops_hands_its_nodes_over_at_the_next_cycle(fleet, replicas):
    names = names_that_split(fleet)
    a, b = replicas(names[0]), replicas(names[1])
    a.cycle()
    b.cycle()
    assert a.cycle().polled == owned(fleet, names, names[0])

    b.close()  # a stopping replica deletes its row
    assert list(PollerReplica.objects.values_list("name", flat=True)) == [names[0]]
    result = a.cycle()
    assert result.replicas == [names[0]]
    assert result.polled == sorted(row.name for row in fleet.rows)


def test_a_replica_not_heard_from_stops_counting_and_rejoins_when_back(fleet, replicas):
    names = names_that_split(fleet)
    a, b = replicas(names[0]), replicas(names[1])
    a.cycle()
    b.cycle()
    assert a.cycle().replicas == sorted(names)

    # b stalls (or was killed): it renews nothing, and its row's time runs out.
    PollerReplica.objects.filter(name=names[1]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    result = a.cycle()
    assert result.replicas == [names[0]]
    assert result.polled == sorted(row.name for row in fleet.rows)
    assert list(PollerReplica.objects.values_list("name", flat=True)) == [names[0]]  # pruned

    back = b.cycle()  # b's row is written again; the split is back
    assert back.replicas == sorted(names)
    assert back.polled == owned(fleet, names, names[1])
    assert a.cycle().polled == owned(fleet, names, names[0])


def test_a_replica_row_lives_for_the_timeout_it_was_given(fleet, replicas, settings):
    settings.CRAWLFLEET_POLL_REPLICA_TIMEOUT = 1.0  # the poll interval is 0.5 s (FAST)
    lone = replicas("replica-lone")
    before = timezone.now()
    lone.cycle()
    row = PollerReplica.objects.get(name="replica-lone")
    assert before + timedelta(seconds=1) <= row.expires_at <= timezone.now() + timedelta(seconds=1)
    time.sleep(1.1)
    assert live_replicas() == []  # not renewed in time: no longer counted


def test_a_one_off_cycle_polls_every_node_and_does_not_join(fleet, replicas):
    names = names_that_split(fleet)
    a = replicas(names[0])
    a.cycle()
    once = Poller(shard=False)
    try:
        result = once.cycle()
    finally:
        once.close()
    assert result.polled == sorted(row.name for row in fleet.rows)
    assert result.replicas == []
    assert list(PollerReplica.objects.values_list("name", flat=True)) == [names[0]]


def test_the_replicas_and_their_shares_are_shown_to_operators(
    fleet, replicas, client, dashboard_users
):
    names = names_that_split(fleet)
    a, b = replicas(names[0]), replicas(names[1])
    for poller in (a, b, a, b):
        poller.cycle()

    families = parse(client.get("/metrics").content.decode())
    assert families["crawlfleet_poller_replicas"][("crawlfleet_poller_replicas", ())] == 2
    assert by_label(families, "crawlfleet_poller_replica_nodes", "replica") == {
        name: len(owned(fleet, names, name)) for name in names
    }

    logged_in_client(client, dashboard_users["viewer"])
    for row in fleet.rows:
        html = client.get(reverse("dashboard:node", args=[row.pk])).content.decode()
        poller = rendezvous.owner(str(row.pk), names)
        assert f"<td data-poller><code>{poller}</code></td>" in html

    a.close()
    b.close()
    html = client.get(reverse("dashboard:node", args=[fleet.rows[0].pk])).content.decode()
    assert "no poller replica reports it" in html
    families = parse(client.get("/metrics").content.decode())
    assert families["crawlfleet_poller_replicas"][("crawlfleet_poller_replicas", ())] == 0


def test_a_replica_timeout_within_one_interval_is_refused(settings):
    settings.CRAWLFLEET_POLL_REPLICA_TIMEOUT = 2.0
    with pytest.raises(ValueError, match="must be longer than the poll interval"):
        Poller(interval=5.0)
    Poller(interval=5.0, shard=False).close()  # a one-off cycle has no replica row to keep


def test_two_pollers_given_one_name_poll_the_same_share_and_are_told(db, caplog, monkeypatch):
    first, second = Membership(5.0, "same-name"), Membership(5.0, "same-name")
    assert first.beat() == ["same-name"]
    assert second.beat() == ["same-name"]  # renews the same row: both count as one replica
    # The narrow race: the row appears between the second's update and its insert.
    real_filter = PollerReplica.objects.filter

    class NothingRenewed:
        def update(self, **fields) -> int:
            return 0

    monkeypatch.setattr(
        PollerReplica.objects,
        "filter",
        lambda **kw: NothingRenewed() if set(kw) == {"name"} else real_filter(**kw),
    )
    assert second.beat() == ["same-name"]
    assert "another poller replica is named same-name" in caplog.text
    assert PollerReplica.objects.count() == 1


def test_a_negative_replica_timeout_stops_the_process_at_start(tmp_path):
    env = {
        **os.environ,
        "CRAWLFLEET_POLL_REPLICA_TIMEOUT": "-1",
        "CRAWLFLEET_DATA_DIR": str(tmp_path),
        "CRAWLFLEET_SECRET_KEY": "test-only-not-secret",
    }
    proc = subprocess.run(
        [str(VENV_BIN / "crawlfleet"), "poller", "--once"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "CRAWLFLEET_POLL_REPLICA_TIMEOUT must be 0 or more seconds" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
