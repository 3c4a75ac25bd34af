"""Index migrations that keep the table writable on PostgreSQL.

A plain ``CREATE INDEX`` locks the job table against writes while it builds, which on a table of
millions of jobs stops the scheduler, the poller and every crawl's reports for as long. On
PostgreSQL these operations build and drop with ``CONCURRENTLY`` instead; on other databases
(SQLite, where the whole file is locked anyway) they are Django's own ``AddIndex`` and
``RemoveIndex``. The migration that uses them must set ``atomic = False``, since PostgreSQL
refuses ``CONCURRENTLY`` inside a transaction.

A concurrent build that was interrupted leaves an invalid index behind under the same name;
building again drops that leftover first, so rerunning the migration finishes the job.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import NotSupportedError
from django.db.migrations.operations import AddIndex, RemoveIndex


def _online(schema_editor: Any, operation: object) -> bool:
    if schema_editor.connection.vendor != "postgresql":
        return False
    if schema_editor.connection.in_atomic_block:
        raise NotSupportedError(
            f"{type(operation).__name__} builds indexes concurrently on PostgreSQL, which "
            "cannot run inside a transaction: set atomic = False on the migration."
        )
    return True


def _drop_invalid_leftover(schema_editor: Any, name: str) -> None:
    """Drop an index of this name that an interrupted concurrent build left invalid."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_index JOIN pg_class ON pg_class.oid = pg_index.indexrelid "
            "WHERE pg_class.relname = %s AND NOT pg_index.indisvalid "
            "AND pg_class.relnamespace = to_regnamespace(current_schema())",
            [name],
        )
        if cursor.fetchone():
            schema_editor.execute(
                f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}"
            )


def _create(schema_editor: Any, model: Any, index: Any) -> None:
    _drop_invalid_leftover(schema_editor, index.name)
    schema_editor.add_index(model, index, concurrently=True)


def _drop(schema_editor: Any, model: Any, index: Any) -> None:
    schema_editor.remove_index(model, index, concurrently=True)


class _OnlineIndexMixin:
    """The PostgreSQL path of an index operation, given which way it goes and on which state."""

    model_name: str
    model_name_lower: str

    def _index(self, app_label: str, state: Any) -> Any:
        raise NotImplementedError

    def _online(
        self, app_label: str, schema_editor: Any, state: Any, step: Any, fallback: Any
    ) -> None:
        if not _online(schema_editor, self):
            fallback()
            return
        model = state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):  # type: ignore[attr-defined]
            step(schema_editor, model, self._index(app_label, state))


class AddIndexOnline(_OnlineIndexMixin, AddIndex):
    """``AddIndex``, built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL."""

    def _index(self, app_label: str, state: Any) -> Any:
        return self.index

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        fallback = partial(
            super().database_forwards, app_label, schema_editor, from_state, to_state
        )
        self._online(app_label, schema_editor, to_state, _create, fallback)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        fallback = partial(
            super().database_backwards, app_label, schema_editor, from_state, to_state
        )
        self._online(app_label, schema_editor, from_state, _drop, fallback)


class RemoveIndexOnline(_OnlineIndexMixin, RemoveIndex):
    """``RemoveIndex``, dropped with ``DROP INDEX CONCURRENTLY`` on PostgreSQL."""

    def _index(self, app_label: str, state: Any) -> Any:
        return state.models[app_label, self.model_name_lower].get_index_by_name(self.name)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        fallback = partial(
            super().database_forwards, app_label, schema_editor, from_state, to_state
        )
        self._online(app_label, schema_editor, from_state, _drop, fallback)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        fallback = partial(
            super().database_backwards, app_label, schema_editor, from_state, to_state
        )
        self._online(app_label, schema_editor, to_state, _create, fallback)
