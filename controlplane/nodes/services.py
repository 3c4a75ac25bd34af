"""Adding, changing, draining and removing nodes: the rules the REST API and the dashboard share.

- A node is only stored once it has answered ``daemonstatus.json`` (and again when its URL or
  credentials change): a typo is caught when it is entered, not when the first job goes nowhere.
- Credentials are write-only: they are stored, used, and never returned or audited.
- A node with jobs on it is not deleted unless forced; draining it first lets them finish.
- Every change is audited here, so every face records the same thing. A problem is a
  :class:`~controlplane.refusals.Refused` raised before anything is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from controlplane.accounts import audit
from controlplane.lib.scrapyd import ScrapydError, summarize
from controlplane.nodes import usage
from controlplane.nodes.models import Node
from controlplane.refusals import Refused, field_errors, summary

logger = logging.getLogger(__name__)

# What the faces may set; state and counters are the health checks' to change.
EDITABLE = ["name", "url", "username", "password", "tags", "weight", "capacity", "enabled"]
EDITABLE += ["draining"]
# Changing these means talking to the node differently: it must answer again.
CONNECTION = ("url", "username", "password")


@dataclass
class Probe:
    """One ``daemonstatus.json`` call."""

    ok: bool
    latency: float | None = None
    status: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class NodeOutcome:
    """The node as stored, and what catching it up did (one line per app that acted)."""

    node: Node
    notes: list[str] = field(default_factory=list)


def probe(node: Node) -> Probe:
    started = time.monotonic()
    try:
        status = node.client().daemonstatus()
    except ScrapydError as exc:
        return Probe(False, None, {}, summarize(str(exc)))
    return Probe(True, time.monotonic() - started, status, "")


def snapshot(node: Node) -> dict[str, Any]:
    """The editable fields as the audit trail records them (the password only as hidden)."""
    return {key: getattr(node, key) for key in EDITABLE}


def _validate(node: Node) -> None:
    """Every problem with ``node`` at once, keyed by field; 409 when the only ones are clashes."""
    errors: dict[str, list[str]] = {}
    try:
        node.full_clean(validate_unique=False)
    except ValidationError as exc:
        errors = field_errors(exc)
    others = Node.objects.exclude(pk=node.pk) if node.pk else Node.objects.all()
    clashes = []
    if "name" not in errors and others.filter(name=node.name).exists():
        errors["name"] = ["already exists"]
        clashes.append(f"a node named {node.name!r} exists")
    if "url" not in errors and others.filter(url=node.url).exists():
        errors["url"] = ["already registered"]
        clashes.append(f"a node with URL {node.url} exists")
    if not errors:
        return
    if len(clashes) == len(errors):
        raise Refused("; ".join(clashes), code="conflict", status=409, fields=errors)
    raise Refused(summary(errors), fields=errors)


def _must_answer(node: Node, what: str) -> Probe:
    answer = probe(node)
    if not answer.ok:
        name = "username" if "401" in answer.error else "url"
        raise Refused(
            f"the node at {node.url} did not answer daemonstatus.json: {answer.error}; {what}",
            fields={name: [f"no answer from a Scrapyd node: {answer.error}"]},
        )
    return answer


def _apply(node: Node, data: dict[str, Any]) -> None:
    nulls = {key: ["cannot be null"] for key, value in data.items() if value is None}
    if nulls:
        raise Refused(summary(nulls), fields=nulls)
    unknown = sorted(set(data) - set(EDITABLE))
    if unknown:
        raise Refused(
            f"cannot set {', '.join(unknown)}", fields={k: ["not editable"] for k in unknown}
        )
    for key, value in data.items():
        setattr(node, key, value)
    if isinstance(node.url, str):
        node.url = node.url.strip().rstrip("/")


def add_node(data: dict[str, Any], actor: audit.Actor | None = None) -> NodeOutcome:
    """Validate, check that the node answers, store it, and catch it up with the versions."""
    node = Node()
    _apply(node, data)
    _validate(node)
    answer = _must_answer(node, "nothing was stored")
    try:
        with transaction.atomic():
            node.save()
            audit.record(actor, "node.add", node.name, fields=snapshot(node), url=node.url)
    except IntegrityError:
        raise Refused(
            "a node with this name or URL was added concurrently", code="conflict", status=409
        ) from None
    node.record_check(ok=True, latency=answer.latency, status=answer.status)
    notes = usage.catch_up(node) if node.enabled else []
    logger.info("node %s added at %s", node.name, node.url)
    return NodeOutcome(node, notes)


def _action(changed: dict[str, list[Any]]) -> str:
    """A single toggle gets its own verb in the trail; anything else is an update."""
    if set(changed) == {"draining"}:
        return "node.drain" if changed["draining"][1] else "node.undrain"
    if set(changed) == {"enabled"}:
        return "node.enable" if changed["enabled"][1] else "node.disable"
    return "node.update"


def update_node(node: Node, data: dict[str, Any], actor: audit.Actor | None = None) -> NodeOutcome:
    """Change some of :data:`EDITABLE`. A new URL or new credentials must work before they are
    stored. A node that is enabled or undrained is caught up with the versions it lacks."""
    before = snapshot(node)
    was_taking_work = node.enabled and not node.draining
    _apply(node, data)
    _validate(node)
    after = snapshot(node)
    changed = audit.changes(before, after)
    if not changed:
        return NodeOutcome(node)
    answer = None
    if any(before[key] != after[key] for key in CONNECTION):
        answer = _must_answer(node, "nothing was changed")
    try:
        with transaction.atomic():
            node.save()
            audit.record(actor, _action(changed), node.name, changes=changed)
    except IntegrityError:
        raise Refused(
            "a node with this name or URL was saved concurrently", code="conflict", status=409
        ) from None
    if answer is not None:
        node.record_check(ok=True, latency=answer.latency, status=answer.status)
    notes: list[str] = []
    taking_work = node.enabled and not node.draining
    if taking_work and not was_taking_work and node.schedulable:
        notes = usage.catch_up(node)
    return NodeOutcome(node, notes)


def delete_node(node: Node, *, force: bool = False, actor: audit.Actor | None = None) -> None:
    """Refused (409) while jobs are on the node, unless ``force``: its jobs then lose their
    node, and the poller marks them lost and retries them elsewhere."""
    blockers = usage.deletion_blockers(node)
    if blockers and not force:
        raise Refused(
            f"{'; '.join(blockers)}; drain it and let them finish, or delete it by force "
            "(its jobs are then lost and retried elsewhere)",
            code="conflict",
            status=409,
        )
    with transaction.atomic():
        audit.record(actor, "node.delete", node.name, fields=snapshot(node), forced=bool(blockers))
        node.delete()
