"""Nodes: the registry (admin), self-registration (node tokens) and catching a node up.

The rules (a node must answer before it is stored, write-only credentials, no deletion under
running jobs, audit) are :mod:`controlplane.nodes.services`, shared with the dashboard.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.http import HttpRequest
from ninja import Router, Status

from controlplane.api.auth import ADMIN, NODE, OPERATOR, VIEWER
from controlplane.api.errors import ApiError, not_found
from controlplane.api.schemas import (
    NodeIn,
    NodeOut,
    NodePatch,
    NodeRegisterIn,
    NodeRegisterOut,
    SyncOut,
)
from controlplane.deploys.sync import SyncOutcome, sync_node
from controlplane.nodes import services
from controlplane.nodes.models import Node

logger = logging.getLogger(__name__)
router = Router(tags=["nodes"])


def sync_out(outcome: SyncOutcome) -> dict:
    return {
        "node": outcome.node,
        "ok": outcome.ok,
        "message": outcome.message,
        "deployed": outcome.deployed,
        "present": outcome.present,
        "removed": outcome.removed,
        "missing": outcome.missing,
        "failed": [r.as_dict() for r in outcome.failed],
    }


def _safe_sync(node: Node) -> SyncOutcome | None:
    """Catch a node up without letting a node problem fail the request that triggered it."""
    try:
        return sync_node(node)
    except Exception:
        logger.exception("sync of node %s failed", node.name)
        return None


def _conflicts(name: str | None, url: str | None, exclude: int | None = None) -> None:
    others = Node.objects.exclude(pk=exclude) if exclude else Node.objects.all()
    if name is not None and others.filter(name=name).exists():
        raise ApiError(409, f"a node named {name!r} exists", fields={"name": ["already exists"]})
    if url is not None and others.filter(url=url).exists():
        raise ApiError(409, f"a node with URL {url} exists", fields={"url": ["already registered"]})


def _get(node_id: int) -> Node:
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        raise not_found(f"node {node_id}")
    return node


# "/register" comes before "/{node_id}": routes match in the order they are declared.
@router.post(
    "/register",
    response={200: NodeRegisterOut, 201: NodeRegisterOut},
    auth=NODE,
    summary="A node announces itself (repeated as heartbeat)",
)
def register(request: HttpRequest, payload: NodeRegisterIn) -> Status:
    """Upsert by name. ``max_proc`` becomes the capacity; tags are taken when the node is first
    registered and are the operators' to change afterwards. Every registration of a healthy node
    checks its versions (``sync_node``, cheap when nothing is missing), so a node restarted with
    an empty eggs dir catches up even if the poller never saw it down."""
    url = payload.url.rstrip("/")
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(name=payload.name).first()
        created = node is None
        _conflicts(None, url, exclude=node.pk if node else None)
        if node is None:
            node = Node(name=payload.name, tags=payload.tags)
        node.url = url
        node.capacity = payload.max_proc
        node.scrapyd_version = payload.scrapyd_version[:40]
        node.self_registered = True
        if payload.username or payload.password:
            node.username, node.password = payload.username, payload.password
        node.full_clean(validate_unique=False)
        node.save()
    if created:  # its first health check now, so it can take work at once
        answer = services.probe(node)
        node.record_check(
            ok=answer.ok, latency=answer.latency, status=answer.status, error=answer.error
        )
    # A node the poller holds down is synced by the poller when it sees it come back.
    sync = _safe_sync(node) if node.state in (Node.State.UP, Node.State.DEGRADED) else None
    if created:
        logger.info("node %s registered at %s", node.name, node.url)
    body = {"node": node, "created": created, "sync": sync_out(sync) if sync else None}
    return Status(201 if created else 200, body)


@router.get("", response=list[NodeOut], auth=VIEWER, summary="List nodes (never credentials)")
def list_nodes(request: HttpRequest) -> list[Node]:
    return list(Node.objects.all())


@router.get("/{node_id}", response=NodeOut, auth=VIEWER)
def get_node(request: HttpRequest, node_id: int) -> Node:
    return _get(node_id)


@router.post("", response={201: NodeOut}, auth=ADMIN, summary="Add a node (must answer)")
def create_node(request: HttpRequest, payload: NodeIn) -> Status:
    """The node must answer ``daemonstatus.json``; it then receives the current versions."""
    outcome = services.add_node(payload.dict(), actor=request.actor)
    return Status(201, outcome.node)


@router.patch(
    "/{node_id}",
    response=NodeOut,
    auth=ADMIN,
    summary="Change tags/weight/capacity/credentials, enable/disable, drain/undrain",
)
def update_node(request: HttpRequest, node_id: int, payload: NodePatch) -> Node:
    """``draining: true`` places no new jobs on the node while its running ones finish."""
    return services.update_node(
        _get(node_id), payload.dict(exclude_unset=True), actor=request.actor
    ).node


@router.delete("/{node_id}", response={204: None}, auth=ADMIN)
def delete_node(request: HttpRequest, node_id: int, force: bool = False) -> Status:
    """Refused while jobs are on the node, unless ``force`` (their jobs are then unassigned)."""
    services.delete_node(_get(node_id), force=force, actor=request.actor)
    return Status(204, None)


@router.post("/{node_id}/sync", response=SyncOut, auth=OPERATOR, summary="Catch a node up")
def sync(request: HttpRequest, node_id: int) -> dict:
    node = _get(node_id)
    return sync_out(sync_node(node))
