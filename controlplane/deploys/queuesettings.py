"""A project's place in the queue: its share weight and caps. One set of rules for every face.

Validated by the model (``full_clean``), every problem at once and keyed by field; nothing is
saved when anything is invalid; each change is audited with the fields it touched.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.accounts import audit
from controlplane.deploys.models import Project
from controlplane.refusals import Refused, field_errors, summary

QUEUE_FIELDS = ("share_weight", "max_concurrent", "spider_caps")


def queue_settings(project: Project) -> dict[str, Any]:
    return {key: getattr(project, key) for key in QUEUE_FIELDS}


def save_queue_settings(
    project: Project, data: dict[str, Any], actor: audit.Actor | None = None
) -> Project:
    """Set ``share_weight`` (0.01..1000), ``max_concurrent`` (at least 1, or None for no cap)
    and ``spider_caps`` ({spider: at least 1}). Raises :class:`Refused` (422) per field."""
    before = queue_settings(Project.objects.get(pk=project.pk))
    errors: dict[str, list[str]] = {}
    for key, value in data.items():
        if key not in QUEUE_FIELDS:
            errors.setdefault(key, []).append("not a queue setting")
        elif value is None and key != "max_concurrent":
            errors.setdefault(key, []).append("cannot be null")
        else:
            setattr(project, key, value)
    try:
        project.full_clean(validate_unique=False, exclude=["current_version"])
    except ValidationError as exc:
        for key, messages in field_errors(exc).items():
            errors.setdefault(key, []).extend(messages)
    if errors:
        for key, value in before.items():  # the caller's object is left as stored
            setattr(project, key, value)
        raise Refused(summary(errors), fields=errors)
    with transaction.atomic():
        project.save(update_fields=list(QUEUE_FIELDS))
        if changed := audit.changes(before, queue_settings(project)):
            audit.record(actor, "project.queue", project.name, changes=changed)
    return project
