"""A small client for the Scrapyd JSON API.

Scrapyd answers errors with HTTP 200 and ``{"status": "error"}``: every call here checks the
envelope and raises :class:`ScrapydError`, so callers never mistake a refusal for success.
Timeouts are always bounded: one dead node must not stall a loop over the fleet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests


class ScrapydError(Exception):
    """The node refused the call (status=error) or could not be reached."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def check_envelope(payload: Any, endpoint: str) -> dict[str, Any]:
    """``payload`` if Scrapyd says ``status: ok``; otherwise ScrapydError with its message."""
    if not isinstance(payload, dict) or payload.get("status") != "ok":
        message = payload.get("message") if isinstance(payload, dict) else None
        raise ScrapydError(message or f"{endpoint} failed: {payload!r}")
    return payload


@dataclass
class ScrapydClient:
    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 5.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def __post_init__(self) -> None:
        if not self.url.endswith("/"):
            self.url += "/"
        if self.username:
            self.session.auth = (self.username, self.password)

    # --- transport -----------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, urljoin(self.url, endpoint), **kwargs)
        except requests.RequestException as exc:
            raise ScrapydError(f"{self.url} unreachable: {exc}", unreachable=True) from exc
        if response.status_code == 401:
            raise ScrapydError(f"{self.url} refused our credentials (401)")
        if response.status_code >= 400:
            raise ScrapydError(f"{self.url}{endpoint} answered HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise ScrapydError(f"{self.url}{endpoint} answered something that is not JSON") from exc
        return check_envelope(payload, endpoint)

    def get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        return self._call("GET", endpoint, params=params)

    def post(self, endpoint: str, data: Any = None, files: Any = None) -> dict[str, Any]:
        return self._call("POST", endpoint, data=data, files=files)

    # --- API ---------------------------------------------------------------------------------
    def daemonstatus(self) -> dict[str, Any]:
        return self.get("daemonstatus.json")

    def addversion(self, project: str, version: str, egg: bytes) -> dict[str, Any]:
        return self.post(
            "addversion.json",
            data={"project": project, "version": version},
            files={"egg": ("project.egg", egg)},
        )

    def delversion(self, project: str, version: str) -> dict[str, Any]:
        return self.post("delversion.json", data={"project": project, "version": version})

    def listversions(self, project: str) -> list[str]:
        return list(self.get("listversions.json", project=project).get("versions", []))

    def listprojects(self) -> list[str]:
        return list(self.get("listprojects.json").get("projects", []))

    def listspiders(self, project: str, version: str | None = None) -> list[str]:
        params = {"project": project}
        if version:
            params["_version"] = version
        return list(self.get("listspiders.json", **params).get("spiders", []))

    def schedule(
        self,
        project: str,
        spider: str,
        *,
        version: str,
        jobid: str,
        settings: dict[str, str] | None = None,
        args: dict[str, str] | None = None,
        priority: float | None = None,
    ) -> str:
        """Queue a run; always pin ``_version`` (Scrapyd's default is the last of sorted())."""
        data: list[tuple[str, str]] = [
            ("project", project),
            ("spider", spider),
            ("_version", version),
            ("jobid", jobid),
        ]
        data += [("setting", f"{key}={value}") for key, value in (settings or {}).items()]
        if priority is not None:
            data.append(("priority", str(priority)))
        data += [(key, str(value)) for key, value in (args or {}).items()]
        return str(self.post("schedule.json", data=data)["jobid"])

    def cancel(self, project: str, job: str, signal: str | None = None) -> str | None:
        data = {"project": project, "job": job}
        if signal:
            data["signal"] = signal
        return self.post("cancel.json", data=data).get("prevstate")

    def listjobs(self, project: str | None = None) -> dict[str, list[dict[str, Any]]]:
        params = {"project": project} if project else {}
        payload = self.get("listjobs.json", **params)
        return {key: list(payload.get(key, [])) for key in ("pending", "running", "finished")}

    def status(self, job: str) -> str | None:
        return self.get("status.json", job=job).get("currstate")

    def jobexits(self) -> dict[str, Any] | None:
        """Exit records of a crawlfleet node; None for a plain Scrapyd without the service."""
        try:
            return self.get("jobexits.json")
        except ScrapydError as exc:
            if exc.unreachable:
                raise
            return None

    def log_tail(self, project: str, spider: str, job: str, size: int = 32768) -> str:
        """The end of a job's log (logs can be large); empty if the node has none."""
        return self.tail(f"logs/{project}/{spider}/{job}.log", size)

    def tail(self, path: str, size: int) -> str:
        """The last ``size`` bytes of a file the node serves.

        Twisted's static files answer a suffix range (``bytes=-N``) longer than the file with
        HTTP 500, so the length is asked first and an explicit ``bytes=start-`` range requested.
        """
        url = urljoin(self.url, path)
        try:
            head = self.session.head(url, timeout=self.timeout)
            if head.status_code == 404:
                return ""
            length = int(head.headers.get("Content-Length") or 0)
            headers = {"Range": f"bytes={length - size}-"} if length > size else {}
            response = self.session.get(url, headers=headers, timeout=self.timeout)
        except (requests.RequestException, ValueError) as exc:
            raise ScrapydError(f"{url}: {exc}", unreachable=True) from exc
        if response.status_code in (404, 416):
            return ""
        if response.status_code not in (200, 206):
            raise ScrapydError(f"{url} answered HTTP {response.status_code}")
        return response.content.decode("utf-8", errors="replace")
