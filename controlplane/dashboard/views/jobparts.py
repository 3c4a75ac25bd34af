"""What the job page shows beyond the row itself: its stats as a table, its progress chart, and
where its items went. Presentation only: the numbers come from the job and its samples.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.dashboard.templatetags.dashboard import duration
from controlplane.dashboard.templatetags.runs_tags import filesize, number
from controlplane.jobs.models import Job, JobSample

CSV_FILE_PREFIX = "crawlfleet/csv/file/"
_SIZE_KEY = re.compile(r"(bytes|memusage/(max|startup))$")
_NUMBER_PART = re.compile(r"(\d+)")


@dataclass
class StatGroup:
    name: str
    rows: list[tuple[str, str]] = field(default_factory=list)


def _natural(key: str) -> list[Any]:
    """'.../200' before '.../404', and '.../2' before '.../10'."""
    return [int(p) if p.isdigit() else p for p in _NUMBER_PART.split(key)]


def format_stat(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        if key.endswith("elapsed_time_seconds"):
            return f"{duration(value)} ({number(value)} s)"
        if _SIZE_KEY.search(key):
            return f"{filesize(value)} ({number(value)})"
        return number(value)
    if isinstance(value, str):
        parsed = parse_datetime(value) if "time" in key else None
        if parsed is not None:
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
            return timezone.localtime(parsed).strftime("%Y-%m-%d %H:%M:%S %Z")
        return value
    return json.dumps(value, default=str, sort_keys=True)


def stat_groups(stats: dict[str, Any]) -> list[StatGroup]:
    """Stats grouped by the part of their key before the first '/', general ones first."""
    groups: dict[str, StatGroup] = {}
    for key in sorted(stats, key=_natural):
        head, _, rest = key.partition("/")
        name, label = (head, rest) if rest else ("general", key)
        groups.setdefault(name, StatGroup(name)).rows.append((label, format_stat(key, stats[key])))
    ordered = sorted(groups.values(), key=lambda g: (g.name != "general", g.name))
    return ordered


@dataclass
class ItemsPlace:
    """Where a job's items were written, as far as the control plane knows."""

    files: list[str]
    written: int | None
    disabled: bool


def items_place(job: Job) -> ItemsPlace:
    stats = job.stats or {}
    files = [str(v) for k, v in sorted(stats.items()) if k.startswith(CSV_FILE_PREFIX)]
    written = stats.get("crawlfleet/csv/items_written")
    disabled = str((job.settings or {}).get("CRAWLFLEET_CSV_DIR", "x")).strip() == ""
    return ItemsPlace(files, int(written) if isinstance(written, int) else None, disabled)


def _unit(span_seconds: float) -> tuple[str, float]:
    if span_seconds <= 180:
        return "seconds", 1.0
    if span_seconds <= 3 * 3600:
        return "minutes", 60.0
    return "hours", 3600.0


def progress_chart(samples: list[JobSample], started: datetime | None) -> str:
    """Chart.js spec (JSON) of items, pages and errors over the run, from the job's samples."""
    origin = started or (samples[0].at if samples else timezone.now())
    offsets = [max(0.0, (s.at - origin).total_seconds()) for s in samples]
    unit, scale = _unit(offsets[-1] if offsets else 0.0)

    def points(attribute: str) -> list[dict[str, float]]:
        return [
            {"x": round(offset / scale, 2), "y": getattr(sample, attribute)}
            for offset, sample in zip(offsets, samples, strict=True)
        ]

    spec = {
        "type": "line",
        "datasets": [
            {"label": "items", "data": points("items")},
            {"label": "pages", "data": points("pages")},
            {"label": "errors", "data": points("errors")},
        ],
        "options": {
            "scales": {
                "x": {"type": "linear", "min": 0, "title": {"display": True, "text": unit}},
                "y": {"beginAtZero": True, "ticks": {"precision": 0}},
            },
            "elements": {"point": {"radius": 0, "hitRadius": 6}, "line": {"tension": 0}},
        },
    }
    return json.dumps(spec)
