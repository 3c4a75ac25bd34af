"""Registration and heartbeats: the node tells the control plane it exists, every few seconds.

Runs in a daemon thread of the node process. The control plane being down must never take the
node down, so every failure is logged and retried with capped exponential backoff.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from controlplane.lib.procutil import port_open

logger = logging.getLogger("crawlfleet.node.registration")

MAX_BACKOFF = 60.0


class RegistrationError(RuntimeError):
    """One registration attempt failed."""


def post_json(url: str, token: str, payload: dict[str, Any], timeout: float = 10.0) -> int:
    """POST ``payload``; return the HTTP status, raise RegistrationError unless it is 2xx."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "crawlfleet-node",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode(errors="replace").strip()
        hint = " (is the token right?)" if exc.code in (401, 403) else ""
        raise RegistrationError(f"HTTP {exc.code}{hint}: {body}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistrationError(f"unreachable: {reason}") from exc


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: 1, 2, 4... capped, with jitter."""
    cap = max(MAX_BACKOFF, interval)
    return min(cap, 2 ** (failures - 1)) * random.uniform(0.8, 1.0)


class Registrar(threading.Thread):
    """Posts ``payload()`` to ``url`` once the node listens, then every ``interval`` seconds."""

    def __init__(
        self,
        url: str,
        token: str,
        payload: Callable[[], dict[str, Any]],
        *,
        interval: float,
        ready: tuple[str, int] | None = None,
        poster: Callable[[str, str, dict[str, Any]], int] = post_json,
    ) -> None:
        super().__init__(name="crawlfleet-registrar", daemon=True)
        self.url = url
        self.token = token
        self.payload = payload
        self.interval = interval
        self.ready = ready
        self.poster = poster
        self.stopped = threading.Event()
        self.successes = 0
        self.failures = 0

    def stop(self) -> None:
        self.stopped.set()

    def _wait_until_listening(self) -> None:
        if self.ready is None:
            return
        host, port = self.ready
        while not self.stopped.is_set() and not port_open(host, port):
            self.stopped.wait(0.2)

    def run(self) -> None:
        self._wait_until_listening()
        failures = 0
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                self.poster(self.url, self.token, self.payload())
            except Exception as exc:  # whatever happens, the node keeps running
                failures += 1
                self.failures += 1
                delay = backoff(failures, self.interval)
                logger.warning(
                    "registration with %s failed (%s); retrying in %.1fs", self.url, exc, delay
                )
            else:
                if failures or not self.successes:
                    logger.info("registered with %s", self.url)
                failures = 0
                self.successes += 1
                delay = max(0.0, self.interval - (time.monotonic() - started))
            self.stopped.wait(delay)
