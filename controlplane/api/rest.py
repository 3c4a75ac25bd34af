"""The REST API under /api/v1/ (OpenAPI schema at /api/v1/openapi.json, docs at /api/v1/docs).

Authentication and roles are in ``controlplane.api.auth``, the error envelope in
``controlplane.api.errors``, one router per resource in ``controlplane.api.routers``.
"""

from ninja import NinjaAPI, Swagger

from controlplane.api import errors
from controlplane.api.routers import (
    alerts,
    audit,
    jobs,
    monitors,
    nodes,
    projects,
    report,
    tagcaps,
    tasks,
    tokens,
)

api = NinjaAPI(
    title="crawlfleet",
    version="1",
    urls_namespace="api-v1",
    # Swagger UI from ninja's bundled static files (``ninja`` is an installed app); no badge
    # that would ask the public validator about this API.
    docs=Swagger(settings={"validatorUrl": None}),
    description=(
        "Control plane of a Scrapyd fleet. Authenticate with `Authorization: Bearer <API token>` "
        "(roles: viewer reads; operator runs, cancels, retries, deploys; admin manages nodes and "
        'tokens and reads the audit trail) or a staff session. Errors are `{"error": {"code", "message", "fields"}}`.'
    ),
)
errors.install(api)
api.add_router("/nodes", nodes.router)
api.add_router("/projects", projects.router)
api.add_router("/tasks", tasks.router)
api.add_router("/cron", tasks.cron_router)
api.add_router("/jobs", jobs.router)
api.add_router("/monitors", monitors.router)
api.add_router("/tokens", tokens.router)
api.add_router("/audit", audit.router)
api.add_router("/report", report.router)
api.add_router("/tag-caps", tagcaps.router)
api.add_router("/alerts", alerts.router)
