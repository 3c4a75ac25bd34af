"""Histograms counted in the database: cumulative buckets, one set of rows however many
processes race to create them, and counts that keep growing across restarts.

Run as ``python -m tests.integration.test_telemetry observe ...`` this module is a replica that
observes values into the shared test database (a file), started in parallel by the tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.common import REPO_ROOT, wait_until

NAME = "crawlfleet_test_seconds"
BUCKETS = (0.1, 0.5, 1.0, 5.0)


def histogram():
    from controlplane.telemetry.histograms import REGISTRY, Histogram

    known = REGISTRY.get(NAME)
    return known or Histogram(NAME, "test", BUCKETS, labelnames=("kind",))


def replica_values(replica: int, count: int) -> list[float]:
    """Values spread over every bucket, +Inf included, different for each replica."""
    return [((replica * 7 + i) % 13) * 0.5 for i in range(count)]


def expected_buckets(values: list[float]) -> dict[float, int]:
    return {le: sum(1 for v in values if v <= le) for le in (*BUCKETS, math.inf)}


def rows() -> list[tuple[str, float, int]]:
    from controlplane.telemetry.models import HistogramBucket

    return list(
        HistogramBucket.objects.filter(metric=NAME)
        .order_by("labels", "le")
        .values_list("labels", "le", "count")
    )


def series(kind: str):
    from controlplane.telemetry import histograms

    found = [s for s in histograms.read([histogram()])[NAME] if s.labels == {"kind": kind}]
    assert len(found) == 1, found
    return found[0]


# --- the replica (runs in subprocesses) --------------------------------------------------------
def report() -> None:
    """Print the test histogram's rows (for a database this process's Django does not use)."""
    from controlplane.django_setup import setup

    setup()
    print("ROWS " + json.dumps([[labels, str(le), count] for labels, le, count in rows()]))


def replica(replica_id: int, count: int, sync_dir: Path) -> None:
    from controlplane.django_setup import setup

    setup()
    (sync_dir / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (sync_dir / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.002)
    for value in replica_values(replica_id, count):
        histogram().observe(value, kind="race")
    print("DONE", flush=True)


def start_replicas(env: dict[str, str], ids: list[int], count: int, sync_dir: Path) -> None:
    """Start the replicas, release them together once all are ready, wait for their end."""
    sync_dir.mkdir()
    argv = [sys.executable, "-m", "tests.integration.test_telemetry", "observe"]
    procs = [
        subprocess.Popen(
            [*argv, str(i), str(count), str(sync_dir)],
            cwd=REPO_ROOT,
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in ids
    ]
    try:

        def ready() -> bool:
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
            return len(list(sync_dir.glob("ready-*"))) >= len(procs)

        wait_until(ready, 60, "replicas ready", interval=0.01)
        (sync_dir / "go").touch()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output
        assert "DONE" in output, output


# --- in this process -----------------------------------------------------------------------------
def test_buckets_are_cumulative_and_the_inf_bucket_holds_count_and_sum(db):
    values = [0.05, 0.3, 0.3, 0.5, 2.0, 7.5, 300.0]
    for value in values:
        histogram().observe(value, kind="one")
    histogram().observe_many(values, kind="many")
    for kind in ("one", "many"):
        found = series(kind)
        assert found.buckets == [(le, expected_buckets(values)[le]) for le in BUCKETS]
        assert found.count == len(values)
        assert found.total == pytest.approx(sum(values))
    # One row per bound and label set, whichever way the values came.
    assert len(rows()) == 2 * (len(BUCKETS) + 1)


def test_label_sets_are_separate_and_must_be_complete(db):
    histogram().observe(0.2, kind="a")
    histogram().observe(9.0, kind="b")
    assert (series("a").count, series("a").buckets[1]) == (1, (0.5, 1))
    assert (series("b").count, series("b").buckets[-1]) == (1, (5.0, 0))
    with pytest.raises(ValueError, match="takes the labels"):
        histogram().observe(1.0)
    with pytest.raises(ValueError, match="takes the labels"):
        histogram().observe(1.0, kind="a", extra="x")


def test_negative_and_nan_values(db):
    histogram().observe(-0.5, kind="odd")  # a clock slightly behind: counted as 0
    histogram().observe(math.nan, kind="odd")  # no measurement: not counted
    assert (series("odd").count, series("odd").buckets[0]) == (1, (0.1, 1))


def test_rows_come_back_after_a_reset(db):
    from controlplane.telemetry.models import HistogramBucket

    histogram().observe(0.2, kind="reset")
    HistogramBucket.objects.filter(metric=NAME).delete()  # this process still thinks they exist
    histogram().observe(0.2, kind="reset")
    assert series("reset").count == 1


def test_replicas_racing_on_first_use_add_up_and_a_restart_keeps_counting(cp_env, tmp_path):
    env = {**cp_env, "CRAWLFLEET_LOG_LEVEL": "WARNING"}
    start_replicas(env, [1, 2, 3, 4], 30, tmp_path / "race")
    values = [v for i in (1, 2, 3, 4) for v in replica_values(i, 30)]
    by_le = {le: count for labels, le, count in rows() if json.loads(labels) == {"kind": "race"}}
    # Four processes created the rows at once: one set, and no observation lost.
    assert len(rows()) == len(BUCKETS) + 1
    assert by_le == expected_buckets(values)
    before = series("race")

    # A replica started later (a restart) adds to the same counters; nothing goes down.
    start_replicas(env, [5], 10, tmp_path / "restart")
    values += replica_values(5, 10)
    after = series("race")
    assert after.count == before.count + 10 == len(values)
    assert all(a >= b for (_, a), (_, b) in zip(after.buckets, before.buckets, strict=True))
    assert after.buckets == [(le, expected_buckets(values)[le]) for le in BUCKETS]
    assert after.total == pytest.approx(sum(values))


@pytest.mark.postgres
def test_replicas_add_up_on_postgresql(postgres_url, tmp_path):
    """The same race on the production database: +Inf stored as a float, ON CONFLICT DO
    NOTHING on first use, and concurrent increments of one row."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "CRAWLFLEET_DATABASE_URL": postgres_url,
        "CRAWLFLEET_DATA_DIR": str(tmp_path / "data"),
        "CRAWLFLEET_SECRET_KEY": "test-only-not-secret",
        "CRAWLFLEET_LOG_LEVEL": "WARNING",
    }
    crawlfleet = Path(sys.executable).parent / "crawlfleet"
    migrate = subprocess.run(
        [str(crawlfleet), "manage", "migrate", "telemetry", "-v", "0"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    start_replicas(env, [1, 2, 3, 4], 30, tmp_path / "race")
    argv = [sys.executable, "-m", "tests.integration.test_telemetry", "report"]
    out = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    found = json.loads(next(line for line in out.splitlines() if line.startswith("ROWS "))[5:])
    values = [v for i in (1, 2, 3, 4) for v in replica_values(i, 30)]
    assert {float(le): count for _, le, count in found} == expected_buckets(values)
    assert len(found) == len(BUCKETS) + 1


if __name__ == "__main__":
    action, *rest = sys.argv[1:]
    if action == "observe":
        replica(int(rest[0]), int(rest[1]), Path(rest[2]))
    elif action == "report":
        report()
    else:
        raise SystemExit(f"unknown action {action}")
