"""Audit entries made readable: a change as ``field: old → new``, other details as ``key: value``."""

from __future__ import annotations

import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def audit_lines(detail: Any) -> list[dict[str, Any]]:
    """``[{"key", "old", "new"}]`` for a change, ``[{"key", "value"}]`` for anything else."""
    if not isinstance(detail, dict):
        return [{"key": "", "value": audit_value(detail)}] if detail not in (None, "") else []
    lines: list[dict[str, Any]] = []
    for key, value in detail.items():
        if key == "changes" and isinstance(value, dict):
            for field, pair in value.items():
                old, new = (
                    pair if isinstance(pair, list | tuple) and len(pair) == 2 else (None, pair)
                )
                lines.append({"key": field, "old": audit_value(old), "new": audit_value(new)})
        elif key == "fields" and isinstance(value, dict):
            lines += [{"key": field, "value": audit_value(v)} for field, v in value.items()]
        else:
            lines.append({"key": key, "value": audit_value(value)})
    return lines


@register.filter
def audit_value(value: Any) -> str:
    """One value as an operator reads it: text as it is, empty as ``—``, the rest as JSON."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


@register.simple_tag(takes_context=True)
def refine(context: dict[str, Any], key: str, value: Any) -> str:
    """The current filters with ``key`` set, from the first page (the cursor is dropped)."""
    query = context["request"].GET.copy()
    query[key] = value
    query.pop("cursor", None)
    return query.urlencode()
