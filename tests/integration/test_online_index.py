"""Index migrations on the job table keep it writable on a real PostgreSQL server.

``controlplane/onlineindex.py`` builds and drops with ``CONCURRENTLY``. The proof is a lock race:
while a transaction holds rows of the job table, the index build has to wait for it; a plain
``CREATE INDEX`` would queue a lock that blocks every other writer behind it, a concurrent build
does not, and a second writer goes through.
"""

from __future__ import annotations

import subprocess
import time

import psycopg
import pytest

from tests.fixtures.common import REPO_ROOT, wait_until
from tests.fixtures.postgres import PostgresServer
from tests.integration.test_postgres import _crawlfleet, _run, _worker

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INDEX = "job_finished_cover_idx"  # jobs 0008, the widest index on the job table


def _index_state(conn: psycopg.Connection, name: str) -> tuple[bool, ...] | None:
    row = conn.execute(
        "SELECT pg_index.indisvalid FROM pg_index "
        "JOIN pg_class ON pg_class.oid = pg_index.indexrelid WHERE pg_class.relname = %s",
        [name],
    ).fetchone()
    return None if row is None else tuple(row)


@pytest.fixture
def before_the_index(migrated_env: dict[str, str], postgres_server: PostgresServer):
    """A database with queued jobs, migrated back to just before the covering index."""
    _run(_worker("seed", "1", "4", "5"), migrated_env)
    _run(_crawlfleet("manage", "migrate", "jobs", "0007", "--no-input", "-v", "0"), migrated_env)
    database = migrated_env["CRAWLFLEET_DATABASE_URL"].rsplit("/", 1)[1]
    with postgres_server.connect(database) as conn:
        assert _index_state(conn, INDEX) is None
        ids = [row[0] for row in conn.execute("SELECT id FROM jobs_job ORDER BY id")]
        yield migrated_env, database, ids


def test_the_build_waits_for_writers_without_blocking_new_ones(before_the_index, postgres_server):
    env, database, ids = before_the_index
    holder = postgres_server.connect(database)
    holder.autocommit = False
    holder.execute("UPDATE jobs_job SET errors = errors WHERE id = %s", [ids[0]])
    migrate = subprocess.Popen(
        _crawlfleet("manage", "migrate", "jobs", "--no-input", "-v", "0"),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with postgres_server.connect(database) as watcher:

            def building() -> bool:
                assert migrate.poll() is None, migrate.communicate()[0]
                return bool(
                    watcher.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE query ILIKE %s",
                        ["CREATE INDEX%" + INDEX + "%"],
                    ).fetchone()
                )

            wait_until(building, 60, "the index build to start", interval=0.05)
            time.sleep(0.3)  # the build is now waiting for the holder's transaction
            with postgres_server.connect(database) as writer:
                writer.execute("SET lock_timeout = '3s'")
                # Would fail on the lock timeout behind a plain CREATE INDEX.
                writer.execute("UPDATE jobs_job SET errors = errors WHERE id = %s", [ids[1]])
            assert migrate.poll() is None  # still waiting for the holder
    finally:
        holder.commit()
        holder.close()
        output = migrate.communicate(timeout=120)[0]
    assert migrate.returncode == 0, output
    with postgres_server.connect(database) as conn:
        assert _index_state(conn, INDEX) == (True,)
        assert _index_state(conn, "job_finished_at") is None  # dropped by the same migration


def test_an_interrupted_build_is_finished_by_running_the_migration_again(
    before_the_index, postgres_server
):
    env, database, _ids = before_the_index
    with postgres_server.connect(database) as conn:
        # What a failed concurrent build leaves: an invalid index under the migration's name
        # (made here by a unique build over the queued jobs, which share their state).
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {INDEX} ON jobs_job (state)")
        assert _index_state(conn, INDEX) == (False,)
    _run(_crawlfleet("manage", "migrate", "jobs", "--no-input", "-v", "0"), env)
    with postgres_server.connect(database) as conn:
        assert _index_state(conn, INDEX) == (True,)
        columns = conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
            "JOIN pg_class ON pg_class.oid = indexrelid WHERE relname = %s",
            [INDEX],
        ).fetchone()[0]
    assert "(finished_at, state, attempt, items, pages, errors)" in columns


def test_going_back_drops_and_rebuilds_concurrently(before_the_index, postgres_server):
    env, database, _ids = before_the_index
    _run(_crawlfleet("manage", "migrate", "jobs", "--no-input", "-v", "0"), env)
    _run(_crawlfleet("manage", "migrate", "jobs", "0003", "--no-input", "-v", "0"), env)
    with postgres_server.connect(database) as conn:
        for name in (INDEX, "job_finished_at", "job_state_cause_idx"):
            assert _index_state(conn, name) is None, name
    _run(_crawlfleet("manage", "migrate", "--no-input", "-v", "0"), env)
    _run(_crawlfleet("manage", "migrate", "--check"), env)
    with postgres_server.connect(database) as conn:
        assert _index_state(conn, INDEX) == (True,)
        assert _index_state(conn, "job_state_cause_idx") == (True,)
