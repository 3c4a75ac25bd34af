"""The verdict on a job its node says has ended: evidence, classification, then the monitors.

Kept apart from the poll loop (:mod:`controlplane.jobs.tracking`) so the rules read top to
bottom: gather what is known (the spider's report, the node's exit record, the log's tail),
classify it (:func:`controlplane.jobs.outcome.classify`), and judge a job that succeeded by its
monitor rules (:mod:`controlplane.jobs.judging`). A job that a stall rule stopped ends in the
state that rule names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.jobs import judging, outcome, retry
from controlplane.jobs.models import Job
from controlplane.jobs.nodeview import NodeSession, parse_node_time


@dataclass
class Verdict:
    state: str
    reason: str
    fields: dict[str, Any] = field(default_factory=dict)


def gather(job: Job, session: NodeSession) -> outcome.Evidence:
    evidence = outcome.Evidence(reported_stats=job.stats if job.reported_final else None)
    record = session.exit_record(job.scrapyd_job_id)
    if record and record.get("state") in ("exited", "killed"):
        evidence.exit_known = True
        evidence.exit_code = record.get("exit_code")
        evidence.signal = record.get("signal")
        evidence.signal_name = record.get("signal_name")
    if not job.reported_final or evidence.exit_code or evidence.signal is not None:
        evidence.log = outcome.parse_log(session.log_tail(job))
    return evidence


def stopped_state(job: Job) -> tuple[str, str]:
    """(state, cause) of a job the control plane stopped, from the reason it recorded.

    A stall rule set to *degraded* stops the crawl too, but the job ends degraded, not failed.
    """
    state, cause = outcome.cancel_cause(job.reason)
    if cause == "stalled":
        breaches = (job.monitor_report or {}).get("breaches") or []
        if breaches and all(b.get("outcome") == Job.State.DEGRADED for b in breaches):
            state = Job.State.DEGRADED
    return state, cause


def runtime_of(started: datetime | None, ended: datetime | None) -> float | None:
    if started is None or ended is None:
        return None
    return max(0.0, (ended - started).total_seconds())


def decide(job: Job, session: NodeSession, entry: dict[str, Any]) -> Verdict:
    """The final state, reason and fields of an ended job (nothing is written here)."""
    policy = retry.policy_for(job)
    evidence = gather(job, session)
    classified = outcome.classify(
        evidence,
        error_threshold=policy.error_threshold,
        cancel_reason=job.reason if job.cancel_requested else None,
    )
    fields: dict[str, Any] = {"exit_status": classified.exit_status, "cause": classified.cause}
    state, reason = classified.state, classified.reason
    if classified.cause == "stalled":
        state, _ = stopped_state(job)
    if classified.stats:
        holder = Job(stats={})
        holder.apply_stats(classified.stats)
        fields.update(
            stats=holder.stats,
            items=holder.items,
            pages=holder.pages,
            errors=holder.errors,
            finish_reason=holder.finish_reason,
        )
    record = session.exit_record(job.scrapyd_job_id) or {}
    started = parse_node_time(record.get("start_time")) or parse_node_time(entry.get("start_time"))
    if job.started_at is None and started is not None:
        fields["started_at"] = started
    ended = parse_node_time(record.get("end_time")) or parse_node_time(entry.get("end_time"))
    if ended is not None:
        fields["finished_at"] = ended
    if not job.log_url:
        fields["log_url"] = job.log_url_on(job.node)
    if state == Job.State.SUCCEEDED:
        judgement = judging.judge(
            job, classified.stats, runtime_of(job.started_at or started, ended)
        )
        if judgement.report:
            fields["monitor_report"] = judgement.report
        if judgement.state:
            state, reason, fields["cause"] = judgement.state, judgement.reason, judgement.cause
    return Verdict(state, reason, fields)
