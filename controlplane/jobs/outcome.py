"""How an ended crawl is judged: succeeded, failed, cancelled or timed out.

Scrapyd calls every ended job "finished", so the verdict is built from evidence gathered
elsewhere (see docs/FAILURES.md for the rules in prose):

* the final stats the spider reported itself (the most reliable source),
* the process's exit code or signal, from the node's ``jobexits.json``,
* the tail of the job's log: the ``Dumping Scrapy stats`` dict and the ``Spider closed (reason)``
  line, as a fallback when the spider could not report,
* the task's error threshold, and whether the control plane itself asked the job to stop.

Everything here is a pure function of that evidence, so the rules can be tested on real logs.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

# Finish reasons that mean the crawl ended as its author intended: the spider ran out of work,
# or hit a limit it was configured with (CLOSESPIDER_TIMEOUT / _ITEMCOUNT / _PAGECOUNT).
OK_FINISH_REASONS = frozenset(
    {"finished", "closespider_timeout", "closespider_itemcount", "closespider_pagecount"}
)
# Finish reasons a shared (fan-out) crawl's worker stops with when it loses Redis, each with the
# cause it is filed under and why the job failed (crawler/spiders/shared.py).
SHARED_CRAWL_FAILURES: dict[str, tuple[str, str]] = {
    "shared_frontier_lost": (
        "shared_frontier_lost",
        "Redis lost the shared crawl's queue and duplicate filter mid-crawl; pages may be missing",
    ),
    "shared_redis_error": (
        "shared_redis_error",
        "the shared crawl could not reach Redis for longer than SHARED_REDIS_DOWN_TIMEOUT",
    ),
}
# Why the control plane asked a job to stop; recorded in Job.reason when the cancel is sent.
CANCEL_OPERATOR = "cancel requested by an operator"
CANCEL_TIMEOUT = "ran longer than max_runtime"
CANCEL_HUNG = "no heartbeat"
CANCEL_STALLED = "stalled"
OUTCOME_STAT = "crawlfleet/outcome"
FAILURE_REASON_STAT = "crawlfleet/failure_reason"

STATS_MARKER = "Dumping Scrapy stats:"
_CLOSED_RE = re.compile(r"\] INFO: Spider closed \(([^)]*)\)")
# "2026-11-22 09:21:58 [logger] LEVEL: message": the start of every log record.
_RECORD_RE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S* \[[^\]]+\] [A-Z]+: ", re.M)
# The last line of a traceback, e.g. "RuntimeError: init_error: deliberate failure".
_EXCEPTION_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*)$", re.M)


@dataclass
class LogFacts:
    """What the tail of a job's log says about how the crawl ended."""

    stats: dict[str, Any] | None = None
    close_reason: str | None = None
    last_exception: str | None = None
    # The stats marker was found but the dict could not be read (e.g. cut by the tail window).
    stats_truncated: bool = False


@dataclass
class Evidence:
    """Everything known about one ended job."""

    reported_stats: dict[str, Any] | None = None
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    # False when the node has no exit records for the job (plain Scrapyd, or records trimmed).
    exit_known: bool = False
    log: LogFacts = field(default_factory=LogFacts)

    @property
    def stats(self) -> dict[str, Any] | None:
        """The spider's own report wins; the log's stats dump is the fallback."""
        if self.reported_stats:
            return self.reported_stats
        return self.log.stats

    @property
    def stats_source(self) -> str:
        if self.reported_stats:
            return "report"
        return "log" if self.log.stats else ""

    @property
    def finish_reason(self) -> str | None:
        stats = self.stats or {}
        reason = stats.get("finish_reason") or self.log.close_reason
        return str(reason) if reason else None

    @property
    def exit_status(self) -> int | None:
        """The exit code, or ``-N`` for a process killed by signal N (the subprocess convention)."""
        if self.signal is not None:
            return -int(self.signal)
        return self.exit_code


@dataclass
class Outcome:
    state: str  # a Job.State value
    reason: str
    exit_status: int | None
    stats: dict[str, Any]
    cause: str = ""  # a short code for metrics and filters (Job.cause)


def cancel_cause(cancel_reason: str) -> tuple[str, str]:
    """(state, cause) of a job the control plane asked to stop, from the reason it recorded."""
    if cancel_reason.startswith(CANCEL_TIMEOUT):
        return "timed_out", "timed_out"
    if cancel_reason.startswith(CANCEL_HUNG):
        return "failed", "hung"
    if cancel_reason.startswith(CANCEL_STALLED):
        return "failed", "stalled"
    return "cancelled", "cancelled"


def classify(
    evidence: Evidence,
    *,
    error_threshold: int = 0,
    cancel_reason: str | None = None,
) -> Outcome:
    """Apply the documented rules, first match wins.

    ``cancel_reason`` is set when the control plane asked the job to stop (``CANCEL_*``); a job
    that then ends by shutdown, a signal or a non-zero exit is cancelled / timed out rather than
    failed. One that finished normally anyway is judged like any other.
    """
    stats = dict(evidence.stats or {})
    finish_reason = evidence.finish_reason
    exit_status = evidence.exit_status

    def outcome(state: str, reason: str, cause: str) -> Outcome:
        return Outcome(state, reason, exit_status, stats, cause)

    ended_normally = (
        evidence.signal is None
        and not evidence.exit_code
        and bool(stats)
        and finish_reason in OK_FINISH_REASONS
        and stats.get(OUTCOME_STAT) != "failed"
    )
    if cancel_reason and not ended_normally:
        how = _how_it_ended(evidence, finish_reason)
        return outcome(*_swap(cancel_cause(cancel_reason), f"{cancel_reason}; stopped ({how})"))

    if evidence.signal is not None:
        name = evidence.signal_name or f"signal {evidence.signal}"
        return outcome("failed", f"killed by {name}" + _partial(stats), "killed")
    if evidence.exit_code:
        detail = f": {evidence.log.last_exception}" if evidence.log.last_exception else ""
        return outcome("failed", f"exited with status {evidence.exit_code}{detail}", "exit_status")
    if not stats:
        detail = (
            f" (last error: {evidence.log.last_exception})" if evidence.log.last_exception else ""
        )
        if evidence.log.stats_truncated:
            detail += " (the stats dump in the log could not be read)"
        return outcome("failed", f"process died without stats{detail}", "no_stats")
    if stats.get(OUTCOME_STAT) == "failed":
        why = stats.get(FAILURE_REASON_STAT) or "no reason given"
        return outcome("failed", f"the crawl reported itself failed: {why}", "reported_failed")
    if finish_reason not in OK_FINISH_REASONS:
        if finish_reason == "shutdown":
            return outcome(
                "failed", "shut down by a signal the control plane did not send", "finish_reason"
            )
        if finish_reason in SHARED_CRAWL_FAILURES:
            cause, why = SHARED_CRAWL_FAILURES[finish_reason]
            return outcome("failed", f"finish reason {finish_reason!r}: {why}", cause)
        return outcome("failed", f"finish reason {finish_reason or 'missing'!r}", "finish_reason")
    errors = int(stats.get("log_count/ERROR", 0) or 0)
    if errors > error_threshold:
        return outcome(
            "failed",
            f"{errors} ERROR log line(s), more than the threshold of {error_threshold}",
            "error_threshold",
        )
    return outcome("succeeded", f"finish reason {finish_reason!r}, {errors} error(s)", "finished")


def _swap(state_cause: tuple[str, str], reason: str) -> tuple[str, str, str]:
    return state_cause[0], reason, state_cause[1]


def _how_it_ended(evidence: Evidence, finish_reason: str | None) -> str:
    if evidence.signal is not None:
        return f"killed by {evidence.signal_name or evidence.signal}"
    if evidence.exit_code:
        return f"exit status {evidence.exit_code}"
    if finish_reason:
        return f"finish reason {finish_reason!r}"
    return "no stats"


def _partial(stats: dict[str, Any]) -> str:
    if not stats:
        return ""
    return f" after {int(stats.get('item_scraped_count', 0) or 0)} item(s)"


# --- log parsing ------------------------------------------------------------------------------
def parse_log(text: str) -> LogFacts:
    """Read the end of a Scrapy 2.19 job log.

    The stats are the last ``Dumping Scrapy stats:`` record, a ``pprint`` of the stats dict whose
    values may include ``datetime.datetime(...)`` calls; it is parsed with :mod:`ast`, never
    evaluated. The close reason is the last ``Spider closed (reason)`` line.
    """
    facts = LogFacts()
    closed = list(_CLOSED_RE.finditer(text))
    if closed:
        facts.close_reason = closed[-1].group(1).strip() or None
    marker = text.rfind(STATS_MARKER)
    if marker >= 0:
        body = text[marker + len(STATS_MARKER) :]
        following = _RECORD_RE.search(body)
        if following:
            body = body[: following.start()]
        facts.stats = parse_stats_dict(body)
        facts.stats_truncated = facts.stats is None
    exceptions = _EXCEPTION_RE.findall(text)
    if exceptions:
        facts.last_exception = exceptions[-1].strip()[:500]
    return facts


def parse_stats_dict(text: str) -> dict[str, Any] | None:
    """A pprinted stats dict as plain JSON-ready data; None if it is not one."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None
    if not isinstance(tree.body, ast.Dict):
        return None
    stats: dict[str, Any] = {}
    for key_node, value_node in zip(tree.body.keys, tree.body.values, strict=True):
        if not isinstance(key_node, ast.Constant) or not isinstance(key_node.value, str):
            continue
        stats[key_node.value] = _value(value_node)
    return stats


def _value(node: ast.expr) -> Any:
    """A literal, a ``datetime.datetime(...)`` as ISO text, or the source text of anything else."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        parsed = _datetime(node)
        return parsed.isoformat() if parsed is not None else ast.unparse(node)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _datetime(node: ast.expr) -> dt.datetime | None:
    if not (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("datetime")):
        return None
    try:
        args = [ast.literal_eval(arg) for arg in node.args]
        tz = None
        for keyword in node.keywords:
            if keyword.arg == "tzinfo" and ast.unparse(keyword.value).endswith("timezone.utc"):
                tz = dt.UTC
        return dt.datetime(*args, tzinfo=tz)
    except (ValueError, TypeError, SyntaxError):
        return None
