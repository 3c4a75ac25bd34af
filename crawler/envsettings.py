"""Environment overrides for the project's own (namespaced) settings.

Scrapy reads ``-s NAME=VALUE`` and per-spider ``custom_settings``; this adds the environment, so a
container can be configured without editing code. Values are coerced to the type of the default.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """An environment variable holds a value of the wrong shape."""


def coerce(name: str, raw: str, default: Any) -> Any:
    """Turn ``raw`` into the type of ``default``; lists take JSON or comma-separated values."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected a boolean, got {raw!r}")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, list | tuple):
            text = raw.strip()
            if text.startswith("["):
                return list(json.loads(text))
            return [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(default, dict):
            return dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise SettingError(f"environment variable {name}: {exc}") from exc
    return raw


def env(name: str, default: T) -> T:
    """The setting ``name`` from the environment, or ``default``."""
    raw = os.environ.get(name)
    return default if raw is None else coerce(name, raw, default)
