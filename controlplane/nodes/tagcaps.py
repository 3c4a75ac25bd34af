"""Caps on jobs in flight per node tag (``TagCap``): set, change, remove. Audited."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from controlplane.accounts import audit
from controlplane.nodes.models import TagCap
from controlplane.refusals import Refused, field_errors, summary


def set_tag_cap(tag: str, max_concurrent: int, actor: audit.Actor | None = None) -> TagCap:
    """At most ``max_concurrent`` (at least 1) jobs at once on the nodes tagged ``tag``."""
    cap = TagCap.objects.filter(tag=tag).first() or TagCap(tag=tag)
    before = cap.max_concurrent if cap.pk else None
    cap.max_concurrent = max_concurrent
    try:
        cap.full_clean(validate_unique=False)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise Refused(summary(errors), fields=errors) from None
    with transaction.atomic():
        cap.save()
        if before != max_concurrent:
            audit.record(actor, "tagcap.set", tag, max_concurrent=[before, max_concurrent])
    return cap


def delete_tag_cap(tag: str, actor: audit.Actor | None = None) -> bool:
    with transaction.atomic():
        deleted, _ = TagCap.objects.filter(tag=tag).delete()
        if deleted:
            audit.record(actor, "tagcap.delete", tag)
    return bool(deleted)
