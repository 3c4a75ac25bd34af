"""Operational events: what someone should hear about, raised by the domain as it happens.

The domain apps sit below the alerting app that routes and sends alerts, so they never import
it. They call :func:`raise_event`, which sends the :data:`event_raised` signal; the alerts app
connects its receiver in ``AppConfig.ready()`` and writes the event to its queue (one INSERT:
raising an event never waits for a network call). Call it inside the same transaction as the
state change it reports, so the change and its event are committed together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.dispatch import Signal

JOB_FAILED = "job_failed"
RETRIES_EXHAUSTED = "retries_exhausted"
RUN_DEGRADED = "run_degraded"
MONITOR_BREACHED = "monitor_breached"
NODE_DOWN = "node_down"
NODE_BACK = "node_back"
DEPLOY_FAILED = "deploy_failed"
TASK_MISSED = "task_missed"

KINDS: dict[str, str] = {
    JOB_FAILED: "a job failed, was lost or timed out",
    RETRIES_EXHAUSTED: "a run failed with no retry left",
    RUN_DEGRADED: "a run succeeded but broke a monitor set to degraded",
    MONITOR_BREACHED: "a job broke a monitor rule",
    NODE_DOWN: "a node stopped answering",
    NODE_BACK: "a node answers again",
    DEPLOY_FAILED: "a deploy failed on a node",
    TASK_MISSED: "a task missed its fires",
}

event_raised = Signal()


@dataclass(frozen=True)
class Event:
    """One occurrence. ``group`` names what it is about (``node:3``, ``task:7``) so repeats of the
    same trouble can be folded into one alert; it defaults to the kind and the subject ids."""

    kind: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    project_id: int | None = None
    task_id: int | None = None
    node_id: int | None = None
    job_id: int | None = None
    run_id: int | None = None
    group: str = ""

    @property
    def group_key(self) -> str:
        if self.group:
            return self.group
        for name, value in (
            ("task", self.task_id),
            ("node", self.node_id),
            ("project", self.project_id),
        ):
            if value is not None:
                return f"{self.kind}:{name}:{value}"
        return self.kind


def raise_event(kind: str, summary: str, **fields: Any) -> Event:
    """Record that ``kind`` happened; the receivers queue it for alerting."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    event = Event(kind=kind, summary=summary[:500], **fields)
    event_raised.send(sender=Event, event=event)
    return event
