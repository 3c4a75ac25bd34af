"""``{{ job|waiting }}``: why a queued job has not started (docs/QUEUE.md), no query."""

from __future__ import annotations

from django import template

from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text

register = template.Library()


@register.filter
def waiting(job: Job) -> str:
    return waiting_text(job)
