"""Projects and versions: egg upload (deploys to every node), rollback, redeploy, deletion."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import File, Form, Router, Status, UploadedFile

from controlplane.api.auth import OPERATOR, VIEWER
from controlplane.api.errors import ApiError, not_found
from controlplane.api.queueschemas import ProjectQueueIn
from controlplane.api.schemas import (
    DeployIn,
    DeployOut,
    NodeResultOut,
    ProjectDetailOut,
    ProjectOut,
    RollbackIn,
    VersionOut,
)
from controlplane.deploys import removal, services
from controlplane.deploys.models import Project, Version
from controlplane.deploys.queuesettings import queue_settings, save_queue_settings
from controlplane.deploys.uploads import read_egg_upload
from controlplane.nodes.models import Node

router = Router(tags=["projects"])


def project_out(project: Project) -> dict:
    live = project.versions.filter(deleted_at__isnull=True)
    latest = live.order_by("-number").first()
    current = project.current_version
    return {
        "name": project.name,
        "current_version": current.version if current else None,
        "latest_version": latest.version if latest else None,
        "versions": live.count(),
        "spiders": list(current.spiders) if current else [],
        "created_at": project.created_at,
        **queue_settings(project),
    }


def version_out(version: Version) -> dict:
    deployments = version.deployments.select_related("node").order_by("node__name")
    return {
        "project": version.project.name,
        "version": version.version,
        "sha256": version.sha256,
        "size": version.size,
        "spiders": list(version.spiders),
        "current": version.project.current_version_id == version.pk,
        "created_at": version.created_at,
        "deleted_at": version.deleted_at,
        "deployments": [
            {
                "node": d.node.name,
                "state": d.state,
                "message": d.message[:500],
                "updated_at": d.updated_at,
            }
            for d in deployments
        ],
    }


def deploy_out(outcome: services.DeployOutcome) -> dict:
    version = outcome.version
    project = Project.objects.filter(pk=version.project_id).first()
    return {
        "project": version.project.name,
        "version": version.version,
        "created": outcome.created,
        "current": bool(project and project.current_version_id == version.pk),
        "ok": outcome.ok,
        "message": outcome.message,
        "spiders": list(version.spiders),
        "nodes": [r.as_dict() for r in outcome.results],
    }


def _project(name: str) -> Project:
    project = Project.objects.select_related("current_version").filter(name=name).first()
    if project is None:
        raise not_found(f"project {name!r}")
    return project


def _version(project: Project, version: str) -> Version:
    row = project.versions.filter(version=version).first()
    if row is None:
        raise not_found(f"version {version!r} of {project.name}")
    return row


@router.get("", response=list[ProjectOut], auth=VIEWER)
def list_projects(request: HttpRequest) -> list[dict]:
    return [project_out(p) for p in Project.objects.select_related("current_version")]


@router.get("/{name}", response=ProjectDetailOut, auth=VIEWER)
def get_project(request: HttpRequest, name: str) -> dict:
    project = _project(name)
    versions = project.versions.filter(deleted_at__isnull=True).order_by("-number")
    return {**project_out(project), "version_list": [version_out(v) for v in versions]}


@router.patch(
    "/{name}", response=ProjectOut, auth=OPERATOR, summary="Change its share weight and caps"
)
def update_queue_settings(request: HttpRequest, name: str, payload: ProjectQueueIn) -> dict:
    """``share_weight`` (0.01..1000), ``max_concurrent`` (at least 1; null: no cap),
    ``spider_caps`` ({spider: at least 1}); 422 per field, nothing saved when anything is bad."""
    project = _project(name)
    save_queue_settings(project, payload.dict(exclude_unset=True), actor=request.actor)
    return project_out(project)


@router.get("/{name}/versions", response=list[VersionOut], auth=VIEWER)
def list_versions(request: HttpRequest, name: str, include_deleted: bool = False) -> list[dict]:
    versions = _project(name).versions.order_by("-number")
    if not include_deleted:
        versions = versions.filter(deleted_at__isnull=True)
    return [version_out(v) for v in versions]


@router.get("/{name}/versions/{version}", response=VersionOut, auth=VIEWER)
def get_version(request: HttpRequest, name: str, version: str) -> dict:
    return version_out(_version(_project(name), version))


@router.post(
    "/{name}/versions",
    response={200: DeployOut, 201: DeployOut},
    auth=OPERATOR,
    summary="Upload an egg: store it, deploy it to every node, make it current",
)
def upload(
    request: HttpRequest,
    name: str,
    egg: File[UploadedFile],
    version: Form[str] = "",
) -> Status:
    """Multipart ``egg`` (and ``version``; default: the egg's own numeric version).

    201 when stored and deployed, 200 when these exact bytes were already stored (deployed where
    missing). 413 for an egg over the size limit, 422 for an invalid egg or one every node rejected, 409 for a version number already
    used by another egg; in both cases nothing is stored.
    """
    data = read_egg_upload(egg, egg.size)
    version = version or services.version_of_egg(data)
    outcome = services.upload_version(name, version, data, actor=request.actor)
    return Status(201 if outcome.created else 200, deploy_out(outcome))


@router.post(
    "/{name}/versions/{version}/deploy",
    response=list[NodeResultOut],
    auth=OPERATOR,
    summary="Deploy a stored version again, to all or some nodes",
)
def redeploy(request: HttpRequest, name: str, version: str, payload: DeployIn) -> list[dict]:
    row = _version(_project(name), version)
    nodes = None
    if payload.nodes is not None:
        found = {n.name: n for n in Node.objects.filter(name__in=payload.nodes)}
        unknown = sorted(set(payload.nodes) - set(found))
        if unknown:
            raise ApiError(422, f"unknown node(s): {', '.join(unknown)}", fields={"nodes": unknown})
        nodes = list(found.values())
    return [r.as_dict() for r in services.deploy_version(row, nodes, actor=request.actor)]


@router.post(
    "/{name}/rollback", response=DeployOut, auth=OPERATOR, summary="Make a version current"
)
def rollback(request: HttpRequest, name: str, payload: RollbackIn) -> dict:
    project = _project(name)
    row = project.versions.filter(version=payload.version).first()
    if row is None:
        raise ApiError(
            422,
            f"{name} has no version {payload.version!r}",
            fields={"version": ["unknown version"]},
        )
    return deploy_out(services.rollback(project, row, actor=request.actor))


@router.delete("/{name}/versions/{version}", response=DeployOut, auth=OPERATOR)
def delete_version(request: HttpRequest, name: str, version: str) -> dict:
    """Removes it from every node, then the row. 409 if current, pinned by a task, or in use."""
    row = _version(_project(name), version)
    if row.deleted_at is not None:
        raise ApiError(409, f"version {version} of {name} is already deleted")
    return deploy_out(removal.delete_version(row, actor=request.actor))
