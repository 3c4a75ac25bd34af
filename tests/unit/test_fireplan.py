"""Which fires run and which are recorded as missed: pure functions of the trigger and the clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from controlplane.scheduling import cron
from controlplane.scheduling.fireplan import MAX_LATE_RUNS, MAX_MISSED_RECORDS, plan_fires


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_plan_fires_runs_fires_within_the_grace_and_records_older_ones_missed():
    trigger = cron.parse("* * * * *")
    now = utc(2025, 1, 1, 10, 0, 30)
    plan = plan_fires(trigger, utc(2025, 1, 1, 9, 55, 30), now, grace_seconds=60)
    assert plan.to_run == [utc(2025, 1, 1, 10, 0)]
    assert plan.missed == [utc(2025, 1, 1, 9, m) for m in (56, 57, 58, 59)]
    assert plan.newest == utc(2025, 1, 1, 10, 0)
    assert "more than the misfire grace of 60s" in dict(plan.fires)[utc(2025, 1, 1, 9, 56)]


def test_plan_fires_after_a_long_outage_is_bounded():
    trigger = cron.parse("* * * * * *")
    now = utc(2025, 1, 8, 12)
    started = time.monotonic()
    plan = plan_fires(trigger, now - timedelta(days=7), now, grace_seconds=60)
    assert time.monotonic() - started < 1.0
    assert plan.to_run == [now - timedelta(seconds=s) for s in range(MAX_LATE_RUNS - 1, -1, -1)]
    assert len(plan.missed) == MAX_MISSED_RECORDS
    assert plan.newest == now
    superseded = dict(plan.fires)[now - timedelta(seconds=MAX_LATE_RUNS)]
    assert superseded.startswith("superseded")


def test_plan_fires_with_nothing_due():
    plan = plan_fires(cron.parse("0 0 1 1 *"), utc(2025, 1, 2), utc(2025, 6, 1), 60)
    assert plan.fires == []
    assert plan.newest is None


def test_fires_within_the_horizon_are_recorded_ahead_and_all_run():
    trigger = cron.parse("* * * * * *")
    now = utc(2025, 1, 8, 12, 0, 0)
    plain = plan_fires(trigger, now - timedelta(days=7), now, grace_seconds=60)
    ahead = plan_fires(
        trigger, now - timedelta(days=7), now, grace_seconds=60, horizon=now + timedelta(seconds=5)
    )
    # The same past fires run or are missed as without a horizon; the next five all run.
    assert ahead.missed == plain.missed
    assert ahead.to_run == plain.to_run + [now + timedelta(seconds=s) for s in range(1, 6)]
    assert ahead.newest == now + timedelta(seconds=5)
    # Nothing due yet: only the fires ahead.
    soon = plan_fires(trigger, now, now, grace_seconds=60, horizon=now + timedelta(seconds=2))
    assert soon.to_run == [now + timedelta(seconds=1), now + timedelta(seconds=2)]
    assert soon.missed == []
