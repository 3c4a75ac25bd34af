"""Inserting the many rows of a fire burst at a fraction of ``bulk_create``'s cost.

``bulk_create`` passes every value of every row through Django's generic expression and
preparation machinery; for a burst of 500 runs and 500 jobs (about 40 columns each) that was
most of the fire's time. Here a value that is already a plain ``str``/``int``/``float``/``bool``
or ``None`` in a plain column is passed as it is, and everything else (datetimes, JSON) through
the field's own ``get_db_prep_save``, exactly as ``bulk_create`` would. ``pre_save`` runs for the
fields that define one (``auto_now``, the queue rank), so rows get the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

_PLAIN_FIELDS = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.FloatField,
    models.BooleanField,
    models.ForeignKey,
)
_PLAIN_VALUES = (str, int, float, bool, type(None))


def _columns(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.local_concrete_fields if not f.primary_key]


def _row(db, obj: models.Model, fields: list[models.Field], plain: list[bool], hooks: list[bool]):
    values = []
    for field, is_plain, hook in zip(fields, plain, hooks, strict=True):
        value = field.pre_save(obj, True) if hook else getattr(obj, field.attname)
        if not (is_plain and type(value) in _PLAIN_VALUES):
            value = field.get_db_prep_save(value, db)
        values.append(value)
    return values


def _prepare(db: BaseDatabaseWrapper, model: type[models.Model], objs: Sequence[models.Model]):
    fields = _columns(model)
    plain = [isinstance(f, _PLAIN_FIELDS) for f in fields]
    hooks = [type(f).pre_save is not models.Field.pre_save for f in fields]
    rows = [_row(db, obj, fields, plain, hooks) for obj in objs]
    ops = db.ops
    head = (
        f"INSERT INTO {ops.quote_name(model._meta.db_table)} "
        f"({', '.join(ops.quote_name(f.column) for f in fields)}) VALUES "
    )
    return fields, rows, head


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _saved(obj: models.Model) -> None:
    obj._state.adding = False
    obj._state.db = DEFAULT_DB_ALIAS


def insert_all(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """Insert every object (their primary keys are not read back)."""
    if not objs:
        return
    db = connections[DEFAULT_DB_ALIAS]  # once: each look-up through the proxy costs
    fields, rows, head = _prepare(db, model, objs)
    with db.cursor() as cursor:
        cursor.executemany(head + "(" + ", ".join(["%s"] * len(fields)) + ")", rows)
    for obj in objs:
        _saved(obj)


def insert_new(
    model: type[models.Model], objs: Sequence[models.Model], key: Sequence[str]
) -> list[models.Model]:
    """Insert the objects no unique constraint already holds; return those, with their keys.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a row a unique constraint refuses (another
    replica recorded it first) is skipped, not an error, and only the rows this statement
    inserted come back. They are matched to their objects by the ``key`` fields (datetimes
    compared in UTC: SQLite returns them naive, PostgreSQL aware).
    """
    if not objs:
        return []
    db = connections[DEFAULT_DB_ALIAS]
    fields, rows, head = _prepare(db, model, objs)
    ops = db.ops
    positions = [next(i for i, f in enumerate(fields) if f.attname == name) for name in key]
    by_key: dict[tuple[Any, ...], models.Model] = {
        tuple(_comparable(getattr(obj, fields[i].attname)) for i in positions): obj for obj in objs
    }
    pk = model._meta.pk
    returning = ", ".join(
        ops.quote_name(c) for c in [pk.column, *(fields[i].column for i in positions)]
    )
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    size = max(1, ops.bulk_batch_size(fields, objs))
    created = []
    with db.cursor() as cursor:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            sql = f"{head}{', '.join([one] * len(batch))} ON CONFLICT DO NOTHING RETURNING {returning}"
            cursor.execute(sql, [value for row in batch for value in row])
            for pk_value, *values in cursor.fetchall():
                obj = by_key[tuple(_comparable(v) for v in values)]
                obj.pk = pk_value
                _saved(obj)
                created.append(obj)
    return created
