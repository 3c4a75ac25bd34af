"""A malformed allow list is reported at start-up (``crawlfleet web`` migrates and checks)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from controlplane.metrics.access import policy


@checks.register()
def metrics_allow_list(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        policy()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="crawlfleet.E001")]
    return []
