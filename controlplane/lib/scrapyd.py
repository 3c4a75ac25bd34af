"""A small client for the Scrapyd JSON API.

Scrapyd answers errors with HTTP 200 and ``{"status": "error"}``: every call here checks the
envelope and raises :class:`ScrapydError`, so callers never mistake a refusal for success.
Timeouts are always bounded: one dead node must not stall a loop over the fleet.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry


class ScrapydError(Exception):
    """The node refused the call (status=error) or could not be reached."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def summarize(message: str, limit: int = 500) -> str:
    """The line of a Scrapyd error that says what went wrong (its messages carry tracebacks)."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[-1] if len(lines) > 1 and "Traceback" in message else " ".join(lines)
    return text[:limit]


def log_path(project: str, spider: str, job: str) -> str:
    """Where a Scrapyd node serves a job's log, relative to the node's URL."""
    return f"logs/{project}/{spider}/{job}.log"


def items_path(project: str, spider: str, job: str) -> str:
    """Where a Scrapyd node with an ``items_dir`` serves a job's items feed (its ``items_url``)."""
    return f"items/{project}/{spider}/{job}.jl"


def check_envelope(payload: Any, endpoint: str) -> dict[str, Any]:
    """``payload`` if Scrapyd says ``status: ok``; otherwise ScrapydError with its message."""
    if not isinstance(payload, dict) or payload.get("status") != "ok":
        message = payload.get("message") if isinstance(payload, dict) else None
        raise ScrapydError(message or f"{endpoint} failed: {payload!r}")
    return payload


def schedule_form(
    project: str,
    spider: str,
    version: str,
    jobid: str,
    settings: dict[str, str] | None = None,
    args: dict[str, Any] | None = None,
    priority: float | None = None,
) -> list[tuple[str, str]]:
    """schedule.json's form. ``_version`` is always pinned: Scrapyd's default is the last of
    ``sorted(versions)``, a string sort."""
    form = [("project", project), ("spider", spider), ("_version", version), ("jobid", jobid)]
    form += [("setting", f"{key}={value}") for key, value in (settings or {}).items()]
    if priority is not None:
        form.append(("priority", str(priority)))
    form += [(key, str(value)) for key, value in (args or {}).items()]
    return form


def read_answer(url: str, endpoint: str, status: int, body: bytes) -> dict[str, Any]:
    """The payload of a node's answer, or ScrapydError: the one reading every transport shares."""
    if status == 401:
        raise ScrapydError(f"{url} refused our credentials (401)")
    if status >= 400:
        raise ScrapydError(f"{url}{endpoint} answered HTTP {status}")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise ScrapydError(f"{url}{endpoint} answered something that is not JSON") from exc
    return check_envelope(payload, endpoint)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` .. ``start + len(data)`` of a file that was ``size`` bytes long."""

    data: bytes
    start: int
    size: int

    @property
    def end(self) -> int:
        """The offset just after the bytes read: where the next read starts."""
        return self.start + len(self.data)


class StaleConnectionRetry(Retry):
    """One more try of a GET or HEAD whose connection broke before an answer came: a kept-alive
    connection the node closed (it restarted) as the request went out. Never a POST (a
    ``schedule.json`` must not be sent twice blindly), never a connect error and never a read
    timeout: a node that does not answer is not asked twice, so its timeout stays bounded."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("total", 1)
        kwargs.setdefault("connect", 0)
        kwargs.setdefault("read", 1)
        kwargs.setdefault("status", 0)
        kwargs.setdefault("other", 0)
        kwargs.setdefault("redirect", False)
        kwargs.setdefault("allowed_methods", frozenset({"GET", "HEAD"}))
        kwargs.setdefault("backoff_factor", 0)
        super().__init__(**kwargs)

    def increment(
        self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any
    ) -> Retry:
        error = kwargs.get("error")
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(method, url, *args, **kwargs)


def node_session(url: str) -> requests.Session:
    """A keep-alive session for one node.

    The environment's proxy and CA settings are read once, here: with ``trust_env`` requests
    walks ``os.environ`` for them on every call, a tenth of a poll's CPU. A node that
    ``NO_PROXY`` does not cover still goes through ``HTTP_PROXY``, as before. A stale kept-alive
    connection costs a read no failure (:class:`StaleConnectionRetry`)."""
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=StaleConnectionRetry())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@dataclass
class ScrapydClient:
    """One node's JSON API. Its session keeps connections alive: keep the client to reuse them
    (the poller keeps one per node, :class:`controlplane.nodes.clients.NodeClients`)."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 5.0
    session: requests.Session | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.url.endswith("/"):
            self.url += "/"
        if self.session is None:
            self.session = node_session(self.url)
        if self.username:
            self.session.auth = (self.username, self.password)

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.session.close()

    # --- transport -----------------------------------------------------------------------
    def _call(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, urljoin(self.url, endpoint), **kwargs)
        except requests.RequestException as exc:
            raise ScrapydError(f"{self.url} unreachable: {exc}", unreachable=True) from exc
        return read_answer(self.url, endpoint, response.status_code, response.content)

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
        form = schedule_form(project, spider, version, jobid, settings, args, priority)
        return str(self.post("schedule.json", data=form)["jobid"])

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
        return self.tail(log_path(project, spider, job), size)

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

    def file_size(self, path: str) -> int | None:
        """The length of a file the node serves (HEAD only); None if it has no such file."""
        url = urljoin(self.url, path)
        try:
            head = self.session.head(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ScrapydError(f"{url}: {exc}", unreachable=True) from exc
        if head.status_code == 404:
            return None
        if head.status_code >= 400:
            raise ScrapydError(f"{url} answered HTTP {head.status_code}")
        try:
            return int(head.headers.get("Content-Length") or 0)
        except ValueError as exc:
            raise ScrapydError(f"{url} answered a malformed Content-Length") from exc

    def read_range(self, path: str, start: int | None, max_bytes: int) -> ByteRange | None:
        """At most ``max_bytes`` of a file the node serves, from byte ``start`` (None: the last
        ``max_bytes``); None if the node has no such file.

        The length is asked first (HEAD), then only the bytes wanted are requested with an
        explicit ``bytes=start-end`` range: never the whole file, and never a suffix range (which
        Twisted's static files answer with HTTP 500 when it is longer than the file, see
        :meth:`tail`). A ``start`` at or past the end reads nothing and asks for nothing more.
        """
        if (start is not None and start < 0) or max_bytes < 1:
            raise ValueError("start must be >= 0 and max_bytes >= 1")
        url = urljoin(self.url, path)
        try:
            head = self.session.head(url, timeout=self.timeout)
            if head.status_code == 404:
                return None
            if head.status_code >= 400:
                raise ScrapydError(f"{url} answered HTTP {head.status_code}")
            size = int(head.headers.get("Content-Length") or 0)
            if start is None:
                start = max(0, size - max_bytes)
            if start >= size:
                return ByteRange(b"", min(start, size), size)
            end = min(size, start + max_bytes) - 1
            response = self.session.get(
                url, headers={"Range": f"bytes={start}-{end}"}, timeout=self.timeout
            )
        except (requests.RequestException, ValueError) as exc:
            raise ScrapydError(f"{url}: {exc}", unreachable=True) from exc
        if response.status_code == 404:
            return None
        if response.status_code == 416:  # shrank since the HEAD (a log is never truncated)
            return ByteRange(b"", start, start)
        if response.status_code == 206:
            return ByteRange(response.content[: end - start + 1], start, size)
        if response.status_code == 200:  # a server that ignores ranges: cut the answer
            return ByteRange(response.content[start : end + 1], start, size)
        raise ScrapydError(f"{url} answered HTTP {response.status_code}")
