"""Alert senders racing on PostgreSQL, the production database: two ``crawlfleet alerts``
processes route the same queue (so they race to open each group's delivery, and the loser of
the partial unique constraint folds into the winner's) and claim the same deliveries."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from controlplane.lib.procutil import ManagedProcess
from tests.fixtures.common import VENV_BIN, wait_until
from tests.integration import test_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


GROUPS, EVENTS = 8, 80
SEED = """
from controlplane.alerts import services
from controlplane.alerts.models import AlertEvent
services.create_channel({{"name": "hook", "kind": "webhook", "url": "{url}/in",
                         "secret": "postgres-race-signing-secret"}})
services.create_rule({{"name": "all", "channel": "hook", "cooldown": 0}})
AlertEvent.objects.bulk_create(
    AlertEvent(kind="node_down", summary=f"node n{{i % {groups}}} is down",
               group_key=f"node:{{i % {groups}}}", node_id=i % {groups})
    for i in range({events})
)
"""


def test_two_senders_on_postgres_send_each_group_once(
    migrated_env, postgres_server, webhook_receiver, tmp_path: Path
):
    seed = SEED.format(url=webhook_receiver.url, groups=GROUPS, events=EVENTS)
    test_postgres._run(test_postgres._crawlfleet("manage", "shell", "-c", seed), migrated_env)
    env = {**migrated_env, "CRAWLFLEET_ALERT_INTERVAL": "0.1", "CRAWLFLEET_LOG_LEVEL": "INFO"}
    senders = [
        ManagedProcess(
            f"alerts-{i}",
            [str(VENV_BIN / "crawlfleet"), "alerts"],
            log_path=tmp_path / f"alerts-{i}.log",
            env=env,
        ).start()
        for i in range(2)
    ]
    database = migrated_env["CRAWLFLEET_DATABASE_URL"].rsplit("/", 1)[1]

    def settled() -> bool:
        with postgres_server.connect(database) as conn:
            queued = conn.execute(
                "SELECT count(*) FROM alerts_alertevent WHERE routed_at IS NULL"
            ).fetchone()[0]
            open_ = conn.execute(
                "SELECT count(*) FROM alerts_delivery WHERE state IN ('pending', 'sending')"
            ).fetchone()[0]
        return queued == 0 and open_ == 0 and len(webhook_receiver.all()) >= GROUPS

    try:
        wait_until(settled, 60, "every event routed and sent")
    finally:
        for proc in senders:
            proc.stop()
    with postgres_server.connect(database) as conn:
        rows = conn.execute(
            "SELECT group_key, state, event_count, attempts FROM alerts_delivery"
        ).fetchall()
    ids = Counter(r.headers["x-crawlfleet-delivery"] for r in webhook_receiver.all())
    assert set(ids.values()) == {1}, ids  # no delivery sent twice
    assert len(ids) == len(rows)
    # Every event is in exactly one sent delivery; a group sent more than once only when its
    # first delivery had gone out before the rest of its events were routed.
    assert sum(count for _, _, count, _ in rows) == EVENTS
    assert {(state, attempts) for _, state, _, attempts in rows} == {("sent", 1)}
    assert {group for group, *_ in rows} == {f"node:{i}" for i in range(GROUPS)}
    bodies = [json.loads(r.body) for r in webhook_receiver.all()]
    assert sum(b["event_count"] for b in bodies) == EVENTS
