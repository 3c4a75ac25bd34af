"""What a spider's report does to its job: ``started``, ``heartbeat`` (live stats), ``finished``.

The REST API authenticates the spider (its per-job secret) and hands the report here. A report
may move a dispatched job to running, refreshes the job's headline numbers and liveness, adds a
sample to its progress chart (:mod:`controlplane.jobs.samples`), and answers whether the spider
should go on. The final state is left for the poller, which classifies it from the node's exit
record and these stats. Every write is conditional, so a late or replayed report never revives
an ended job or rewrites a recorded outcome.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from controlplane.jobs.models import Job
from controlplane.jobs.samples import record_sample
from controlplane.refusals import Refused

EVENTS = ("started", "heartbeat", "finished")
MAX_STATS_BYTES = 256 * 1024
_NOT_STARTED = (Job.State.DISPATCHING, Job.State.PENDING)


def check_stats(stats: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(stats, default=str)) > MAX_STATS_BYTES:
        raise Refused("stats are too large", fields={"stats": ["too large"]})
    return stats


def headline(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``Job.apply_stats`` would copy, without touching the row's other fields."""
    probe = Job()
    try:
        probe.apply_stats(stats)
    except (TypeError, ValueError) as exc:
        raise Refused(f"malformed stats: {exc}", fields={"stats": [str(exc)]}) from None
    return {
        "stats": probe.stats,
        "items": probe.items,
        "pages": probe.pages,
        "errors": probe.errors,
        "finish_reason": probe.finish_reason,
    }


def decision(job: Job) -> dict[str, str]:
    """The reply to the spider: go on, or stop and why."""
    if job.cancel_requested:
        return {"action": "stop", "reason": f"cancel requested: {job.reason}".strip(": ")}
    if job.state == Job.State.LOST:
        return {
            "action": "stop",
            "reason": "the job was declared lost (its node forgot it); a retry may run elsewhere",
        }
    if job.is_final:
        return {"action": "stop", "reason": f"the job has already ended ({job.state})"}
    if job.state == Job.State.QUEUED:
        return {"action": "stop", "reason": "the job is not dispatched to any node"}
    return {"action": "continue", "reason": ""}


def apply_report(
    job: Job, event: str, stats: dict[str, Any], finish_reason: str | None = None
) -> dict[str, str]:
    """Record one report of ``job``'s spider; the reply for the spider. Refused if malformed."""
    if event not in EVENTS:
        raise Refused(f"unknown event {event!r}", fields={"event": [f"one of {EVENTS}"]})
    now = timezone.now()
    stats = check_stats(stats)
    live = Job.objects.filter(pk=job.pk)
    sampled = False

    if event in ("started", "heartbeat") and job.state in _NOT_STARTED:
        # Sent before (or instead of) the poller noticing it run.
        job.transition(_NOT_STARTED, Job.State.RUNNING, started_at=now, last_heartbeat=now)
    if event == "started":
        live.filter(started_at__isnull=True).update(started_at=now)
        sampled = bool(live.exclude(state__in=Job.FINAL).update(last_heartbeat=now, updated_at=now))
    elif event == "heartbeat":
        fields = headline(stats) if stats else {}
        fields.pop("finish_reason", None)
        # A heartbeat sent just before the spider closed may arrive after its final report (in
        # another worker): it must never overwrite the final stats with older ones.
        sampled = bool(
            live.exclude(state__in=Job.FINAL)
            .filter(reported_final=False)
            .update(last_heartbeat=now, updated_at=now, **fields)
        )
        # An orphan of a lost job still beats: record it, so its liveness is visible.
        live.filter(state=Job.State.LOST).update(last_heartbeat=now)
    else:
        fields = headline(stats)
        if finish_reason:
            fields["finish_reason"] = finish_reason[:100]
        # Once per job: a replayed report cannot rewrite a recorded outcome.
        sampled = bool(
            live.filter(reported_final=False).update(
                reported_final=True, last_heartbeat=now, updated_at=now, **fields
            )
        )
    job.refresh_from_db()
    if sampled:
        record_sample(job, now)
    return decision(job)
