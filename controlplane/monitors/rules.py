"""The monitor rule kinds: their parameters, how each is checked, and the sentence it writes.

Pure functions of a job's figures (its final stats, and the history the caller looked up), with
no Django, so every rule is tested on plain data. A rule that the evidence cannot decide (a
foreign egg sent no field counts, a task has too little history) is *not evaluated*, and says
why; it never passes or fails by default.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

FIELD_STAT_PREFIX = "crawlfleet/fields/"
FIELDS_SEEN_STAT = "crawlfleet/fields_seen"
STATUS_STAT_PREFIX = "downloader/response_status_count/"
# A history rule needs at least this many earlier successful runs (or ``runs``, if fewer).
MIN_HISTORY = 3


class RuleError(ValueError):
    """A rule's parameters are malformed; ``field`` names the parameter."""

    def __init__(self, message: str, field: str = "params") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Figures:
    """What is known about one ended job, read from its stats."""

    stats: Mapping[str, Any]
    runtime: float | None = None  # seconds, from the job's own start and end
    # The task's earlier successful jobs, newest first: [{"items": .., "pages": ..}, ...].
    history: list[dict[str, int]] | None = None
    history_note: str = ""  # why there is no history, when None

    def number(self, key: str) -> int | None:
        value = self.stats.get(key)
        if value is None or isinstance(value, bool):
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    @property
    def items(self) -> int:
        return self.number("item_scraped_count") or 0

    @property
    def pages(self) -> int:
        return self.number("response_received_count") or 0

    def statuses(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for key, value in self.stats.items():
            if key.startswith(STATUS_STAT_PREFIX) and key[len(STATUS_STAT_PREFIX) :].isdigit():
                found[int(key[len(STATUS_STAT_PREFIX) :])] = int(value or 0)
        return found


@dataclass(frozen=True)
class Check:
    """One rule's verdict: ``breach`` is a sentence when broken; ``skipped`` says why it was not
    evaluated; both empty means it held."""

    breach: str = ""
    skipped: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def n(value: float) -> str:
    """A count for a sentence: 2,950."""
    return f"{value:,.0f}"


def pct(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") + "%"


# --- parameters ------------------------------------------------------------------------------
def _int(params: Mapping[str, Any], name: str, *, minimum: int = 0) -> int:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"{name} must be a whole number", name)
    if value < minimum:
        raise RuleError(f"{name} must be at least {minimum}", name)
    return value


def _percent(params: Mapping[str, Any], name: str = "percent") -> float:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(f"{name} must be a number from 0 to 100", name)
    if not 0 <= value <= 100:
        raise RuleError(f"{name} must be from 0 to 100, not {value}", name)
    return float(value)


def _status(params: Mapping[str, Any]) -> int:
    value = params.get("status")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError("status must be an HTTP status code such as 403", "status")
    try:
        HTTPStatus(value)
    except ValueError:
        raise RuleError(f"{value} is not a known HTTP status code", "status") from None
    return value


def _field_name(params: Mapping[str, Any]) -> str:
    value = params.get("field")
    if not isinstance(value, str) or not value.isidentifier() or len(value) > 100:
        raise RuleError("field must be an item field name such as price", "field")
    return value


def _reasons(params: Mapping[str, Any]) -> list[str]:
    value = params.get("reasons")
    if not isinstance(value, list) or not value:
        raise RuleError('reasons must be a list of finish reasons, such as ["finished"]', "reasons")
    if any(not isinstance(r, str) or not r.strip() or len(r) > 100 for r in value):
        raise RuleError("each finish reason must be a short text", "reasons")
    return sorted({r.strip() for r in value})


# --- checks ----------------------------------------------------------------------------------
def check_min(metric: str) -> Callable[[Mapping[str, Any], Figures], Check]:
    def check(params: Mapping[str, Any], figures: Figures) -> Check:
        value, limit = getattr(figures, metric), params["count"]
        found = {metric: value, "minimum": limit}
        if value < limit:
            return Check(f"{n(value)} {metric}, below the minimum of {n(limit)}", figures=found)
        return Check(figures=found)

    return check


def check_max_log(level: str) -> Callable[[Mapping[str, Any], Figures], Check]:
    def check(params: Mapping[str, Any], figures: Figures) -> Check:
        value = figures.number(f"log_count/{level}")
        if value is None:
            value = 0 if figures.stats else None
        if value is None:
            return Check(skipped="the job sent no stats")
        limit = params["count"]
        found = {"lines": value, "maximum": limit}
        if value > limit:
            return Check(
                f"{n(value)} {level} log lines, above the maximum of {n(limit)}", figures=found
            )
        return Check(figures=found)

    return check


def check_finish_reasons(params: Mapping[str, Any], figures: Figures) -> Check:
    reason = str(figures.stats.get("finish_reason") or "")
    if not reason:
        return Check(skipped="the job has no finish reason")
    if reason not in params["reasons"]:
        accepted = ", ".join(params["reasons"])
        return Check(f"finish reason {reason!r}, not one of {accepted}", figures={"reason": reason})
    return Check(figures={"reason": reason})


def check_status_share(params: Mapping[str, Any], figures: Figures) -> Check:
    statuses = figures.statuses()
    total = sum(statuses.values())
    if not total:
        return Check(skipped="the stats count no responses by status")
    status, limit = params["status"], params["percent"]
    count = statuses.get(status, 0)
    share = 100 * count / total
    found = {"status": status, "count": count, "responses": total, "percent": round(share, 2)}
    if share > limit:
        return Check(
            f"HTTP {status} on {n(count)} of {n(total)} responses ({pct(share)}), above {pct(limit)}",
            figures=found,
        )
    return Check(figures=found)


def check_max_runtime(params: Mapping[str, Any], figures: Figures) -> Check:
    runtime = figures.runtime
    if runtime is None:
        elapsed = figures.stats.get("elapsed_time_seconds")
        runtime = float(elapsed) if isinstance(elapsed, int | float) else None
    if runtime is None:
        return Check(skipped="the job's run time is not known")
    limit = params["seconds"]
    found = {"seconds": round(runtime, 1), "maximum": limit}
    if runtime > limit:
        return Check(f"ran {n(runtime)} s, longer than the maximum of {n(limit)} s", figures=found)
    return Check(figures=found)


def check_field_coverage(params: Mapping[str, Any], figures: Figures) -> Check:
    seen = figures.number(FIELDS_SEEN_STAT)
    if seen is None:
        return Check(skipped="the crawl sent no field counts (no crawlfleet coverage pipeline)")
    if seen == 0:
        return Check(skipped="no items to count fields in")
    name, limit = params["field"], params["percent"]
    filled = figures.number(FIELD_STAT_PREFIX + name) or 0
    share = 100 * filled / seen
    found = {"field": name, "filled": filled, "items": seen, "percent": round(share, 2)}
    if share < limit:
        return Check(
            f"field {name!r} filled in {n(filled)} of {n(seen)} items ({pct(share)}), "
            f"below {pct(limit)}",
            figures=found,
        )
    return Check(figures=found)


def check_history(params: Mapping[str, Any], figures: Figures) -> Check:
    metric, limit, runs = params["metric"], params["percent"], params["runs"]
    if figures.history is None:
        return Check(skipped=figures.history_note or "the job has no history to compare with")
    earlier = [int(h.get(metric, 0) or 0) for h in figures.history[:runs]]
    needed = min(runs, MIN_HISTORY)
    if len(earlier) < needed:
        return Check(
            skipped=f"only {len(earlier)} earlier successful run(s); {needed} needed to compare"
        )
    median = statistics.median(earlier)
    value = getattr(figures, metric)
    found = {metric: value, "median": median, "runs": len(earlier), "percent": limit}
    if value < median * limit / 100:
        return Check(
            f"{n(value)} {metric}, below {pct(limit)} of the median {n(median)} "
            f"of the last {len(earlier)} runs",
            figures=found,
        )
    return Check(figures=found)


@dataclass(frozen=True)
class Kind:
    label: str
    parse: Callable[[Mapping[str, Any]], dict[str, Any]]
    check: Callable[[Mapping[str, Any], Figures], Check] | None
    # The parameter that tells two rules of one kind apart (a status code, a field name).
    target: str = ""


def _count(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"count": _int(params, "count")}


KINDS: dict[str, Kind] = {
    "min_items": Kind("at least this many items", _count, check_min("items")),
    "min_pages": Kind("at least this many pages", _count, check_min("pages")),
    "max_errors": Kind("at most this many ERROR log lines", _count, check_max_log("ERROR")),
    "max_warnings": Kind("at most this many WARNING log lines", _count, check_max_log("WARNING")),
    "finish_reasons": Kind(
        "one of these finish reasons", lambda p: {"reasons": _reasons(p)}, check_finish_reasons
    ),
    "status_share": Kind(
        "at most this share of responses with an HTTP status",
        lambda p: {"status": _status(p), "percent": _percent(p)},
        check_status_share,
        target="status",
    ),
    "max_runtime": Kind(
        "at most this run time",
        lambda p: {"seconds": _int(p, "seconds", minimum=1)},
        check_max_runtime,
    ),
    "field_coverage": Kind(
        "this field filled in at least this share of items",
        lambda p: {"field": _field_name(p), "percent": _percent(p)},
        check_field_coverage,
        target="field",
    ),
    "history": Kind(
        "items or pages at least this share of the median of the last runs",
        lambda p: {
            "metric": _metric(p),
            "percent": _percent(p),
            "runs": _int(p, "runs", minimum=1) if "runs" in p else 10,
        },
        check_history,
        target="metric",
    ),
    # Checked on running jobs (controlplane.jobs.stalls), not on ended ones.
    "stall": Kind(
        "items or pages grow at least every this many seconds",
        lambda p: {"seconds": _int(p, "seconds", minimum=5)},
        None,
    ),
}


def _metric(params: Mapping[str, Any]) -> str:
    value = params.get("metric", "items")
    if value not in ("items", "pages"):
        raise RuleError("metric must be items or pages", "metric")
    return value


def parse(kind: str, params: Any) -> dict[str, Any]:
    """The normalised parameters of a rule; :class:`RuleError` names what is wrong."""
    spec = KINDS.get(kind)
    if spec is None:
        raise RuleError(f"unknown rule kind {kind!r}; one of {', '.join(KINDS)}", "kind")
    if not isinstance(params, Mapping):
        raise RuleError("params must be an object")
    normal = spec.parse(params)
    unknown = sorted(set(params) - set(normal))
    if unknown:
        raise RuleError(
            f"unknown parameter(s) for {kind}: {', '.join(map(str, unknown))}; "
            f"it takes {', '.join(normal)}",
            str(unknown[0]),
        )
    return normal


def target_of(kind: str, params: Mapping[str, Any]) -> str:
    """What sets this rule apart from others of its kind on the same task ("" for most)."""
    name = KINDS[kind].target
    return str(params.get(name, "")) if name else ""


def describe(kind: str, params: Mapping[str, Any]) -> str:
    """The rule in words, for pages and alerts."""
    p = params
    return {
        "min_items": lambda: f"at least {n(p['count'])} items",
        "min_pages": lambda: f"at least {n(p['count'])} pages",
        "max_errors": lambda: f"at most {n(p['count'])} ERROR log lines",
        "max_warnings": lambda: f"at most {n(p['count'])} WARNING log lines",
        "finish_reasons": lambda: f"finish reason one of {', '.join(p['reasons'])}",
        "status_share": lambda: f"HTTP {p['status']} on at most {pct(p['percent'])} of responses",
        "max_runtime": lambda: f"runs at most {n(p['seconds'])} s",
        "field_coverage": lambda: f"field {p['field']!r} filled in at least {pct(p['percent'])}",
        "history": lambda: (
            f"{p['metric']} at least {pct(p['percent'])} of the median of the last {p['runs']} runs"
        ),
        "stall": lambda: f"items or pages grow at least every {n(p['seconds'])} s",
    }[kind]()
