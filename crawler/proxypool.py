"""The proxy pool's entries: parsed from the settings, and benched or disabled as they fail.

Kept apart from the downloader middleware (:mod:`crawler.middlewares.proxy`) because none of it
touches requests, responses or the crawler: it turns ``PROXY_LIST``/``PROXY_FILE`` entries into
:class:`Proxy` objects (rejecting malformed ones with messages safe to log, credentials masked)
and keeps the round-robin and ban bookkeeping, so both can be read and tested on their own.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

EXPECTED_FORM = "expected http://[user:pass@]host:port"


class ProxyConfigError(ValueError):
    """The proxy settings name a proxy that cannot be used."""


def redact(url: str) -> str:
    """``url`` with its credentials masked, safe to log even when malformed.

    Everything before the last ``@`` is userinfo (a host cannot contain one), so an unencoded
    ``/`` or ``@`` in a password cannot push part of it out of the masked span. The user name is
    kept when a password follows it (it helps find the entry); a lone token is masked whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}@{hostpart}"


@dataclass
class Proxy:
    """One pool entry; ``auth`` (the header value) is kept out of ``repr`` on purpose."""

    url: str  # http://host:port, no credentials: this is what goes in request.meta["proxy"]
    label: str  # host:port, unique in the pool: used in stats and logs
    auth: bytes | None = field(default=None, repr=False)
    banned_until: float = 0.0
    disabled: str | None = None  # why the proxy is out for the rest of the crawl

    def usable(self, now: float) -> bool:
        return self.disabled is None and self.banned_until <= now


def parse_proxy_url(raw: str, *, auth_encoding: str = "latin-1") -> Proxy:
    """Validate one ``http://[user:pass@]host:port`` entry; the error message is safe to log."""
    shown = repr(redact(raw))
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ProxyConfigError(f"invalid proxy URL {shown}: {exc} ({EXPECTED_FORM})") from None
    problem = None
    if parts.scheme != "http":
        problem = f"scheme must be http, got {parts.scheme or 'none'!r}"
    elif not parts.hostname:
        problem = "missing host"
    elif port is None:
        problem = "missing port"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "unexpected path, query or fragment"
    elif "@" in parts.netloc and not (parts.username and parts.password is not None):
        problem = "credentials must be user:pass"
    if problem:
        raise ProxyConfigError(f"invalid proxy URL {shown}: {problem} ({EXPECTED_FORM})")
    host = parts.hostname or ""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    auth = None
    if parts.username:
        userpass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        try:
            token = base64.b64encode(userpass.encode(auth_encoding))
        except UnicodeEncodeError:
            raise ProxyConfigError(
                f"invalid proxy URL {shown}: credentials are not encodable as {auth_encoding}"
            ) from None
        auth = b"Basic " + token
    return Proxy(url=f"http://{hostport}", label=hostport, auth=auth)


def read_proxy_file(path: str | Path) -> list[str]:
    """Proxy URLs from ``path``: one per line, blank lines and ``#`` comments ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProxyConfigError(
            f"PROXY_FILE {str(path)!r} cannot be read: {exc.strerror or exc}"
        ) from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def build_pool(entries: Iterable[str], *, auth_encoding: str = "latin-1") -> list[Proxy]:
    """Parse every entry, reporting all malformed ones at once; exact duplicates are dropped."""
    proxies: list[Proxy] = []
    problems: list[str] = []
    seen: set[str] = set()
    labels: dict[str, int] = {}
    for raw in entries:
        entry = str(raw).strip()
        if not entry or entry in seen:
            continue
        seen.add(entry)
        try:
            proxy = parse_proxy_url(entry, auth_encoding=auth_encoding)
        except ProxyConfigError as exc:
            problems.append(str(exc))
            continue
        # The same gateway with different accounts is a common provider setup: keep both,
        # told apart in stats by a suffix rather than by the (secret) user name.
        count = labels.get(proxy.label, 0) + 1
        labels[proxy.label] = count
        if count > 1:
            proxy.label = f"{proxy.label}#{count}"
        proxies.append(proxy)
    if problems:
        raise ProxyConfigError("; ".join(problems))
    return proxies


def load_proxies(settings: BaseSettings) -> list[Proxy]:
    """The pool from ``PROXY_LIST`` and ``PROXY_FILE``."""
    entries = list(settings.getlist("PROXY_LIST"))
    path = settings.get("PROXY_FILE") or ""
    if path:
        entries += read_proxy_file(path)
    encoding = settings.get("HTTPPROXY_AUTH_ENCODING") or "latin-1"
    return build_pool(entries, auth_encoding=encoding)


def status_codes(settings: BaseSettings, name: str, default: list[int]) -> list[int]:
    """An HTTP status list setting; a non-numeric entry is a startup error naming the setting."""
    codes = []
    for raw in settings.getlist(name, default):
        try:
            code = int(raw)
        except (TypeError, ValueError):
            code = 0
        if not 100 <= code <= 599:
            raise ProxyConfigError(f"{name} must list HTTP status codes, got {raw!r}")
        codes.append(code)
    return codes


class ProxyPool:
    """Round-robin over the proxies that are neither benched nor disabled."""

    def __init__(
        self, proxies: Sequence[Proxy], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.proxies = list(proxies)
        self.by_label = {proxy.label: proxy for proxy in self.proxies}
        self.clock = clock
        self._cursor = 0

    def pick(self) -> Proxy | None:
        now = self.clock()
        for offset in range(len(self.proxies)):
            index = (self._cursor + offset) % len(self.proxies)
            proxy = self.proxies[index]
            if proxy.usable(now):
                self._cursor = index + 1
                return proxy
        return None

    def any_usable(self) -> bool:
        now = self.clock()
        return any(proxy.usable(now) for proxy in self.proxies)

    def bench(self, proxy: Proxy, seconds: float) -> bool:
        """Bench ``proxy``; True if it was usable until now (a new ban, worth a log line)."""
        now = self.clock()
        was_usable = proxy.usable(now)
        proxy.banned_until = max(proxy.banned_until, now + seconds)
        return was_usable

    def disable(self, proxy: Proxy, reason: str) -> bool:
        """Take ``proxy`` out for good; True if it had not been disabled already."""
        first = proxy.disabled is None
        proxy.disabled = proxy.disabled or reason
        return first
