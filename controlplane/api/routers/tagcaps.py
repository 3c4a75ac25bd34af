"""Caps on jobs in flight per node tag: list, set, remove (docs/QUEUE.md)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status

from controlplane.api.auth import ADMIN, VIEWER
from controlplane.api.errors import not_found
from controlplane.api.queueschemas import TagCapIn, TagCapOut
from controlplane.nodes.models import TagCap
from controlplane.nodes.tagcaps import delete_tag_cap, set_tag_cap

router = Router(tags=["nodes"])


@router.get("", response=list[TagCapOut], auth=VIEWER)
def list_tag_caps(request: HttpRequest) -> list[dict]:
    return list(TagCap.objects.values("tag", "max_concurrent"))


@router.put("/{tag}", response=TagCapOut, auth=ADMIN, summary="Set a tag's cap")
def put_tag_cap(request: HttpRequest, tag: str, payload: TagCapIn) -> dict:
    """At most ``max_concurrent`` (at least 1) jobs at once on the nodes carrying ``tag``."""
    cap = set_tag_cap(tag, payload.max_concurrent, actor=request.actor)
    return {"tag": cap.tag, "max_concurrent": cap.max_concurrent}


@router.delete("/{tag}", response={204: None}, auth=ADMIN)
def remove_tag_cap(request: HttpRequest, tag: str) -> Status:
    if not delete_tag_cap(tag, actor=request.actor):
        raise not_found(f"tag cap {tag!r}")
    return Status(204, None)
