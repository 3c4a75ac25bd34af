"""Judging an ended job by its monitors: the quiet failures a clean exit hides.

The poller classifies a job from its exit and stats first (:mod:`controlplane.jobs.outcome`).
A job that succeeded is then checked against the monitor rules of its task (with the project's
defaults, :func:`controlplane.monitors.models.effective_rules`). A broken rule set to *failed*
fails the job, which is retried like any other failure; one set to *degraded* makes it
``degraded``: it did its work, someone should look, and it is not retried.

What each rule decided is kept in ``Job.monitor_report``: the breaches with their figures and
sentences, and the rules the evidence could not decide (a foreign egg sends no field counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.jobs.models import Job
from controlplane.monitors import rules
from controlplane.monitors.models import MonitorRule, effective_rules

CAUSE_MONITOR = "monitor"


@dataclass
class Judgement:
    """What the monitors make of a job; ``state`` is None when they leave it as it was."""

    state: str | None = None
    reason: str = ""
    cause: str = ""
    report: dict[str, Any] = field(default_factory=dict)


def breach_entry(rule: MonitorRule, message: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule": rule.pk,
        "kind": rule.kind,
        "scope": "project" if rule.is_default else "task",
        "outcome": rule.outcome,
        "rule_text": rule.description,
        "message": message,
        "figures": figures,
    }


def history(job: Job, runs: int) -> tuple[list[dict[str, int]] | None, str]:
    """The task's earlier successful jobs, newest first, or None and why there are none."""
    if job.task_id is None:
        return None, "the job belongs to no task, so it has no history"
    if job.run.crawl_id:
        return None, "a shard of a shared crawl: its share of the work varies from run to run"
    rows = (
        Job.objects.filter(task_id=job.task_id, state=Job.State.SUCCEEDED)
        .exclude(pk=job.pk)
        .order_by("-created_at", "-id")
        .values("items", "pages")[:runs]
    )
    return list(rows), ""


def verdict_of(breaches: list[dict[str, Any]]) -> Judgement:
    """The state the breaches call for: any *failed* rule fails the job, else it is degraded."""
    failed = [b for b in breaches if b["outcome"] == MonitorRule.Outcome.FAILED]
    state = Job.State.FAILED if failed else Job.State.DEGRADED
    words = "; ".join(b["message"] for b in (failed or breaches))
    return Judgement(state=state, reason=f"broke a monitor: {words}", cause=CAUSE_MONITOR)


def judge(job: Job, stats: dict[str, Any], runtime: float | None) -> Judgement:
    """Check a succeeded job against its rules (stall rules are checked while it runs)."""
    chosen = [r for r in effective_rules(job.project_id, job.task_id) if r.kind != "stall"]
    if not chosen:
        return Judgement()
    past, note = None, ""
    wanted = [r.params.get("runs", 10) for r in chosen if r.kind == "history"]
    if wanted:
        past, note = history(job, max(wanted))
    figures = rules.Figures(stats=stats, runtime=runtime, history=past, history_note=note)
    breaches: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for rule in chosen:
        check = rules.KINDS[rule.kind].check(rule.params, figures)  # type: ignore[misc]
        if check.breach:
            breaches.append(breach_entry(rule, check.breach, check.figures))
        elif check.skipped:
            skipped.append({"rule": rule.pk, "rule_text": rule.description, "why": check.skipped})
        else:
            held.append({"rule": rule.pk, "rule_text": rule.description})
    report = {"breaches": breaches, "not_evaluated": skipped, "held": held}
    if not breaches:
        return Judgement(report=report)
    judgement = verdict_of(breaches)
    judgement.report = report
    return judgement
