"""Validate and clean items before any sink sees them.

Dataclass items are coerced to their annotated field types (``"12.50"`` to ``12.5``), strings are
stripped, and required fields must be present. An item that cannot be repaired is dropped loudly:
logged, and counted in ``crawlfleet/items_invalid`` so the control plane can see it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import types
import typing
from typing import Any, Union

from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

logger = logging.getLogger(__name__)


class InvalidItem(ValueError):
    pass


def _target_types(annotation: Any) -> tuple[type, bool]:
    """(concrete type, optional?) for annotations like ``int | None``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else object), optional
    return annotation, False


def _coerce(name: str, value: Any, target: type) -> Any:
    if isinstance(value, str):
        value = value.strip()
    if target in (int, float):
        try:
            return target(str(value).replace(",", "")) if not isinstance(value, target) else value
        except ValueError:
            raise InvalidItem(f"field {name!r}: {value!r} is not a {target.__name__}") from None
    if target is str and not isinstance(value, str):
        return str(value)
    return value


@dataclasses.dataclass(frozen=True)
class _FieldRule:
    name: str
    target: type
    optional: bool
    required: bool


@functools.cache
def _rules_for(cls: type) -> tuple[_FieldRule, ...]:
    """Per item class, computed once: resolving type hints per item is the expensive part."""
    hints = typing.get_type_hints(cls)
    rules = []
    for field in dataclasses.fields(cls):
        target, optional = _target_types(hints.get(field.name, object))
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        rules.append(_FieldRule(field.name, target, optional, required))
    return tuple(rules)


def clean_dataclass(item: Any) -> Any:
    """Coerce and check a dataclass item in place; raise InvalidItem naming the first problem."""
    for rule in _rules_for(type(item)):
        value = getattr(item, rule.name)
        if value is None or value == "":
            if rule.required:
                raise InvalidItem(f"required field {rule.name!r} is empty")
            if rule.optional:
                setattr(item, rule.name, None)
            continue
        setattr(item, rule.name, _coerce(rule.name, value, rule.target))
    return item


class ValidationPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidationPipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not dataclasses.is_dataclass(item):
            return item
        try:
            return clean_dataclass(item)
        except InvalidItem as exc:
            self.stats.inc_value("crawlfleet/items_invalid")
            raise DropItem(f"invalid {type(item).__name__}: {exc}") from exc
