"""Scrapyd's JSON envelope: ``status`` and ``node_name`` on every answer; errors as HTTP 200.

Scrapyd reports a refused call (unknown project, missing parameter) with HTTP 200 and
``{"status": "error", "message": ...}``; its clients read ``status``, so this face does too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import JsonResponse


class ScrapydRefusal(Exception):
    """A call Scrapyd would refuse: answered as its error envelope."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def node_name() -> str:
    return settings.CRAWLFLEET_SCRAPYD_NODE_NAME


def answer(data: dict[str, Any], status: int = 200) -> JsonResponse:
    body = {**data, "status": data.get("status", "ok"), "node_name": node_name()}
    response = JsonResponse(body, status=status, json_dumps_params={"separators": (", ", ": ")})
    # Scrapyd allows any origin, so browser tools (ScrapydWeb's pages) may call it directly.
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Headers"] = "X-Requested-With"
    return response


def refusal(message: str, status: int = 200) -> JsonResponse:
    return answer({"status": "error", "message": message}, status=status)
