"""Writing generated rows fast: PostgreSQL's ``COPY`` when the database is PostgreSQL, batched
``bulk_create`` otherwise (SQLite, for the scripts that measure there).

Rows are dicts of attribute names (``run_id``, not ``run``) to Python values; a column a row
leaves out gets its field's default. Rows stream: a generator of a million rows is never held in
memory. The tables are the real ones the migrations created; ``COPY`` goes through their
constraints and indexes like any insert, only without Django's per-object work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any


def is_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def _columns(model) -> list[tuple[str, str, Any, bool]]:
    """(attname, column, default, is_json) of every concrete column, the primary key included."""
    from django.db.models import JSONField

    return [
        (f.attname, f.column, None if f.primary_key else f.get_default(), isinstance(f, JSONField))
        for f in model._meta.concrete_fields
    ]


def _copy_value(value: Any, is_json: bool) -> Any:
    if is_json:
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def write(model, rows: Iterable[dict[str, Any]], batch: int = 5000) -> int:
    """Insert ``rows`` into ``model``'s table; returns how many. Ids given in the rows are kept
    (the table's id sequence is moved past them afterwards)."""
    from django.core.management.color import no_style
    from django.db import connection

    written = 0
    if is_postgres():
        columns = _columns(model)
        names = ", ".join(f'"{column}"' for _, column, _, _ in columns)
        connection.ensure_connection()
        sql = f'COPY "{model._meta.db_table}" ({names}) FROM STDIN'
        with connection.connection.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(
                    [
                        _copy_value(row.get(attname, default), is_json)
                        for attname, _, default, is_json in columns
                    ]
                )
                written += 1
    else:
        iterator: Iterator[dict[str, Any]] = iter(rows)
        while chunk := [model(**row) for row in islice(iterator, batch)]:
            model.objects.bulk_create(chunk)
            written += len(chunk)
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [model]):
            cursor.execute(sql)
    return written
