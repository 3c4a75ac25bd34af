"""``jobexits.json``: how crawl processes on this node ended, for the control plane's poller.

``GET /jobexits.json[?job=ID][&project=P][&limit=N]`` answers, newest first::

    {"status": "ok", "node_name": ..., "boot_id": ..., "exits": [
        {"job", "project", "spider", "version", "pid",
         "state": "running" | "exited" | "killed" | "lost",
         "exit_code": int | null, "signal": int | null, "signal_name": "SIGKILL" | null,
         "start_time": ISO-8601 UTC, "end_time": ISO-8601 UTC | null,
         "pid_alive": bool, "boot_id": id of the Scrapyd process that started it}]}

``lost`` means the Scrapyd process that started the crawl died before it ended; ``pid_alive``
says whether that orphan is still running (and may still be writing data).
"""

from __future__ import annotations

from typing import Any

from scrapyd.webservice import WsResource, param
from twisted.web import error, http

MAX_LIMIT = 1000


class JobExits(WsResource):
    @param("job", required=False)
    @param("project", required=False)
    @param("limit", required=False, default=100, type=int)
    def render_GET(
        self, txrequest: Any, job: str | None, project: str | None, limit: int
    ) -> dict[str, Any]:
        store = getattr(self.root.launcher, "exits", None)
        if store is None:
            raise error.Error(
                code=http.OK,
                message=b"jobexits.json needs launcher = scrapydnode.launcher."
                b"ExitRecordingLauncher in scrapyd.conf",
            )
        if not 1 <= limit <= MAX_LIMIT:
            raise error.Error(code=http.OK, message=b"limit must be between 1 and 1000")
        return {
            "boot_id": store.boot_id,
            "exits": store.query(job=job, project=project, limit=limit),
        }
