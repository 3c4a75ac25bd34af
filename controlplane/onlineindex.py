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


class AddIndexOnline(AddIndex):
    """``AddIndex``, built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _online(schema_editor, self):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            _drop_invalid_leftover(schema_editor, self.index.name)
            schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _online(schema_editor, self):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)


class RemoveIndexOnline(RemoveIndex):
    """``RemoveIndex``, dropped with ``DROP INDEX CONCURRENTLY`` on PostgreSQL."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _online(schema_editor, self):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
            return
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = from_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            schema_editor.remove_index(model, index, concurrently=True)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _online(schema_editor, self):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
            return
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            index = to_state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
            _drop_invalid_leftover(schema_editor, index.name)
            schema_editor.add_index(model, index, concurrently=True)
