"""The eleven Scrapyd JSON endpoints over the fleet, each one call into the domain services.

Parameter names, required-ness, answers and error messages follow Scrapyd 1.6
(``scrapyd/webservice.py``); differences are documented in the README.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from controlplane.accounts import audit
from controlplane.accounts.audit import Actor
from controlplane.accounts.roles import Role
from controlplane.deploys import removal, services
from controlplane.deploys.models import Project, Version
from controlplane.deploys.uploads import read_egg_upload
from controlplane.jobs import operations
from controlplane.jobs.models import Job
from controlplane.jobs.runs import create_adhoc_run
from controlplane.refusals import Refused
from controlplane.scheduling.models import TaskRun
from controlplane.scrapydapi import listing
from controlplane.scrapydapi.params import Params
from controlplane.scrapydapi.responses import ScrapydRefusal
from controlplane.scrapydapi.scheduleparams import read_schedule_options
from controlplane.validators import VERSION_RE

SIGNALS = {"INT", "TERM", "KILL"}

Handler = Callable[[Params, Actor, str], dict[str, Any]]


def live_projects() -> QuerySet[Project]:
    """Projects with a version left: as in Scrapyd, where a project is its eggs."""
    return Project.objects.filter(versions__deleted_at__isnull=True).distinct()


def _project(name: str) -> Project:
    project = live_projects().filter(name=name).first()
    if project is None:
        raise ScrapydRefusal(f"project '{name}' not found")
    return project


def _version(project: Project, version: str | None) -> Version | None:
    """The named version, or the project's current one when none is named."""
    if not version:
        return project.current_version or project.latest_version()
    row = project.versions.filter(version=version, deleted_at__isnull=True).first()
    if row is None:
        raise ScrapydRefusal(f"version '{version}' not found")
    return row


def _refused(exc: Refused) -> ScrapydRefusal:
    # Scrapyd answers a refused call with HTTP 200; only an upload too large is a 413.
    return ScrapydRefusal(exc.message, 413 if exc.status == 413 else 200)


def daemonstatus(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    jobs = listing.latest_attempts()
    keep = settings.CRAWLFLEET_SCRAPYD_FINISHED_TO_KEEP
    return {
        "pending": jobs.filter(state__in=listing.PENDING_STATES).count(),
        "running": jobs.filter(state=Job.State.RUNNING).count(),
        "finished": min(jobs.filter(state__in=Job.FINAL).count(), keep),
    }


def addversion(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = params.take("project")
    version = params.take("version")
    egg = params.files.get("egg")
    if egg is None:
        raise ScrapydRefusal("'egg' parameter is required")
    if not VERSION_RE.match(version or ""):
        raise ScrapydRefusal(
            f"version '{version}' is not numeric: crawlfleet versions are digits only, so they "
            "sort as numbers (leave `version` unset in scrapy.cfg and scrapyd-deploy sends a "
            "timestamp)"
        )
    try:
        data = read_egg_upload(egg, egg.size)
        outcome = services.upload_version(project, version, data, actor=actor)
    except Refused as exc:
        raise _refused(exc) from None
    spiders = outcome.version.spiders or []
    return {"project": project, "version": version, "spiders": len(spiders)}


def schedule(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = _project(params.take("project"))
    spider = params.take("spider")
    version = _version(project, params.take("_version", required=False))
    job_id = params.take("jobid", required=False)
    priority_text = params.take("priority", required=False, default="0")
    settings_pairs = params.take_all("setting")
    args = params.rest()
    if version is None:
        raise ScrapydRefusal(f"project '{project.name}' has no deployed version")
    if spider not in (version.spiders or []):
        raise ScrapydRefusal(f"spider '{spider}' not found")
    options = read_schedule_options(priority_text, settings_pairs, args, job_id)
    taken = ScrapydRefusal(f"jobid '{job_id}' is already used")
    try:
        with transaction.atomic():
            if (
                job_id
                and Job.objects.filter(Q(scrapyd_job_id=job_id) | Q(chain_id=job_id)).exists()
            ):
                raise taken
            job = create_adhoc_run(
                project,
                spider,
                version=version,
                args=options.args,
                settings=options.settings,
                trigger=TaskRun.Trigger.API,
                job_id=job_id,
                priority=options.priority,
            )
            audit.record(
                actor,
                "job.schedule",
                f"job {job.pk}",
                spider=spider,
                jobid=job.chain_key,
                via="scrapyd",
            )
    except IntegrityError:
        # Two calls with one jobid at once: the unique job id lets one through.
        raise taken from None
    return {"jobid": job.chain_key}


def cancel(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = _project(params.take("project"))
    job_id = params.take("job")
    signal = (params.take("signal", required=False) or "INT").upper()
    if signal not in SIGNALS and not signal.isdigit():
        raise ScrapydRefusal(f"signal is invalid: {signal!r} (use INT, TERM or KILL)")
    job = listing.find_chain(job_id, project.name)
    if job is None or job.is_final:
        return {"prevstate": None}
    prevstate = listing.scrapyd_state(job)
    force = signal in ("KILL", "9") or job.cancel_requested  # ScrapydWeb's force stop: twice
    try:
        operations.cancel_job(job, actor=actor, force=force)
    except operations.OperationError:
        return {"prevstate": None}
    return {"prevstate": prevstate}


def listprojects(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    return {"projects": list(live_projects().order_by("name").values_list("name", flat=True))}


def listversions(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    name = params.take("project")
    versions = Version.objects.filter(project__name=name, deleted_at__isnull=True)
    return {"versions": list(versions.order_by("number").values_list("version", flat=True))}


def listspiders(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = _project(params.take("project"))
    version = _version(project, params.take("_version", required=False))
    return {"spiders": sorted(version.spiders or []) if version else []}


def status(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    job_id = params.take("job")
    project = params.take("project", required=False)
    if project is not None:
        _project(project)
    job = listing.find_chain(job_id, project)
    return {"currstate": listing.scrapyd_state(job) if job else None}


def listjobs(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = params.take("project", required=False)
    if project is not None:
        _project(project)
    return listing.cached_listing(project, prefix)


def delversion(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = _project(params.take("project"))
    name = params.take("version")
    version = project.versions.filter(version=name, deleted_at__isnull=True).first()
    if version is None:
        raise ScrapydRefusal(f"version '{name}' not found")
    try:
        removal.delete_version(version, actor=actor, retire_current=True)
    except Refused as exc:
        raise _refused(exc) from None
    return {}


def delproject(params: Params, actor: Actor, prefix: str) -> dict[str, Any]:
    project = _project(params.take("project"))
    try:
        removal.delete_project(project, actor=actor)
    except Refused as exc:
        raise _refused(exc) from None
    return {}


# endpoint -> (handler, HTTP method, role)
ENDPOINTS: dict[str, tuple[Handler, str, str]] = {
    "daemonstatus.json": (daemonstatus, "GET", Role.VIEWER),
    "addversion.json": (addversion, "POST", Role.OPERATOR),
    "schedule.json": (schedule, "POST", Role.OPERATOR),
    "cancel.json": (cancel, "POST", Role.OPERATOR),
    "listprojects.json": (listprojects, "GET", Role.VIEWER),
    "listversions.json": (listversions, "GET", Role.VIEWER),
    "listspiders.json": (listspiders, "GET", Role.VIEWER),
    "status.json": (status, "GET", Role.VIEWER),
    "listjobs.json": (listjobs, "GET", Role.VIEWER),
    "delversion.json": (delversion, "POST", Role.OPERATOR),
    "delproject.json": (delproject, "POST", Role.OPERATOR),
}
