"""Django's static files app, less the files no page of the control plane ever loads."""

from django.contrib.staticfiles.apps import StaticFilesConfig


class CollectedStaticFiles(StaticFilesConfig):
    """Source maps and ninja's ReDoc bundle (the docs are Swagger UI) are left out of the
    collected files: brotli-compressing them took half a minute of every fresh collect."""

    ignore_patterns = [*StaticFilesConfig.ignore_patterns, "*.map", "redoc.standalone.js"]
