"""A pool of forward proxies with rotation, ban detection and a clean stop when all are burnt.

One proxy gets rate-limited long before a pool does, so requests are spread round-robin across
the proxies that are currently healthy. A proxy is *benched* for ``PROXY_BAN_COOLDOWN`` seconds
when the site answers one of ``PROXY_BAN_CODES`` through it (the site has noticed that address) or
when talking to it fails at the connection level (the proxy is down or overloaded); the request is
then re-sent through another proxy, at most ``PROXY_MAX_RETRIES`` times per request. When no
proxy is left the spider is closed with the reason ``all_proxies_banned``: carrying on would only
hammer the site from addresses it already blocks.

A ``407 Proxy Authentication Required`` answer (``PROXY_AUTH_CODES``) means the credentials
configured for that proxy are missing or wrong. Waiting does not fix that, so the proxy is removed
for the rest of the crawl (logged as an error naming ``host:port``) and the request goes through
another one; if it was the last one, the crawl closes with ``all_proxies_banned`` like any other
exhausted pool. Some proxies answer *wrong* credentials with ``401`` instead (tinyproxy before
1.11.2, which is what Debian 12 ships; tinyproxy issue #532). 401 is not in the default because an
origin server's own 401 would then take proxies out; add it when the fleet runs such proxies.

Configuration: ``PROXY_LIST`` (setting, ``-s PROXY_LIST=a,b``, or the ``PROXY_LIST`` environment
variable, which ``settings.py`` maps) and ``PROXY_FILE`` (one URL per line, ``#`` comments) are
merged and parsed by :mod:`crawler.proxypool`. Each entry must be ``http://[user:pass@]host:port``;
a malformed entry stops the crawl at startup with an error naming it (password masked). An empty
pool disables the middleware.

Credentials never appear in clear outside the pool entries, which hold them only as the encoded
header value: ``request.meta["proxy"]`` holds only ``http://host:port`` and the
``Proxy-Authorization: Basic`` header is set here. Scrapy's
``HttpProxyMiddleware`` (750, after this one at 740) would derive the same header from userinfo in
``meta["proxy"]``, but it also keeps a private ``_auth_proxy`` marker and drops the header when the
proxy changes between attempts; setting both here, and clearing that marker on every (re)assignment,
means exactly one component owns the header. Stats and logs name proxies by ``host:port`` only.

Stats (``crawler.stats``): ``proxy/pool_size``; ``proxy/requests``, ``proxy/bans`` (ban answers),
``proxy/errors`` (connection failures), ``proxy/auth_failures``, each also per proxy as
``proxy/<host:port>/<name>``; ``proxy/retries``, ``proxy/retries_exhausted`` and
``proxy/all_banned``.

Requests with ``meta["dont_proxy"]`` or with ``meta["proxy"]`` already set by someone else
(including ``None``, Scrapy's "no proxy") are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from scrapy import Request, Spider, signals
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    NotConfigured,
    ResponseDataLossError,
)
from scrapy.http import Response
from scrapy.utils.defer import deferred_from_coro
from twisted.internet import error as txerror
from twisted.web.client import ResponseFailed

from crawler.proxypool import Proxy, ProxyConfigError, ProxyPool, load_proxies, status_codes

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

CLOSE_REASON = "all_proxies_banned"

# Failures that say something about the path through the proxy rather than about the request:
# the proxy refused or dropped the connection, could not be resolved, or did not answer in time.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    DownloadConnectionRefusedError,
    CannotResolveHostError,
    DownloadTimeoutError,
    DownloadFailedError,
    ResponseDataLossError,
    TunnelError,
    ResponseFailed,
    txerror.ConnectError,
    txerror.ConnectionLost,
    txerror.ConnectionDone,
    txerror.TimeoutError,
)

# Private meta keys: which pool entry a request was sent through, and how often it was re-sent.
META_PROXY = "_proxy_pool_proxy"
META_RETRIES = "_proxy_pool_retries"


class ProxyPoolMiddleware:
    """Send requests through a rotating pool of proxies, benching the ones that get banned."""

    def __init__(
        self,
        crawler: Crawler,
        pool: ProxyPool,
        *,
        ban_codes: Iterable[int] = (403, 429, 503),
        auth_codes: Iterable[int] = (407,),
        cooldown: float = 60.0,
        max_retries: int = 5,
    ) -> None:
        self.crawler = crawler
        self.stats: StatsCollector = crawler.stats  # type: ignore[assignment]
        self.pool = pool
        self.ban_codes = frozenset(ban_codes)
        self.auth_codes = frozenset(auth_codes)
        self.cooldown = cooldown
        self.max_retries = max_retries
        self._closing = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        try:
            proxies = load_proxies(settings)
            ban_codes = status_codes(settings, "PROXY_BAN_CODES", [403, 429, 503])
            auth_codes = status_codes(settings, "PROXY_AUTH_CODES", [407])
            cooldown = settings.getfloat("PROXY_BAN_COOLDOWN", 60.0)
            max_retries = settings.getint("PROXY_MAX_RETRIES", 5)
        except (ProxyConfigError, ValueError) as exc:
            logger.error("Proxy pool is misconfigured, not starting the crawl: %s", exc)
            raise ProxyConfigError(str(exc)) from None
        if not proxies:
            raise NotConfigured("no proxies configured (PROXY_LIST, PROXY_FILE)")
        middleware = cls(
            crawler,
            ProxyPool(proxies),
            ban_codes=ban_codes,
            auth_codes=auth_codes,
            cooldown=cooldown,
            max_retries=max_retries,
        )
        crawler.signals.connect(middleware.spider_opened, signal=signals.spider_opened)
        return middleware

    def spider_opened(self, spider: Spider) -> None:
        self.stats.set_value("proxy/pool_size", len(self.pool.proxies))
        logger.info(
            "Proxy pool: %d proxies (%s); bans on %s, cooldown %ss, %d retries per request",
            len(self.pool.proxies),
            ", ".join(proxy.label for proxy in self.pool.proxies),
            ", ".join(str(code) for code in sorted(self.ban_codes)) or "no status",
            self.cooldown,
            self.max_retries,
        )

    # --- downloader middleware hooks -----------------------------------------------------------

    def process_request(self, request: Request) -> None:
        meta = request.meta
        if meta.get("dont_proxy"):
            return None
        if "proxy" in meta and META_PROXY not in meta:
            return None  # chosen by the spider or another component
        proxy = self.pool.pick()
        if proxy is None:
            self._close_all_banned()
            raise IgnoreRequest(f"no usable proxy left for {request.url}")
        meta["proxy"] = proxy.url
        meta[META_PROXY] = proxy.label
        meta.pop("_auth_proxy", None)  # HttpProxyMiddleware's marker for the previous proxy
        if proxy.auth:
            request.headers[b"Proxy-Authorization"] = proxy.auth
        else:
            request.headers.pop(b"Proxy-Authorization", None)
        self._inc("proxy/requests", proxy, "requests")
        return None

    def process_response(self, request: Request, response: Response) -> Request | Response:
        proxy = self._proxy_of(request)
        if proxy is None:
            return response
        if response.status in self.auth_codes:
            self._inc("proxy/auth_failures", proxy, "auth_failures")
            if self.pool.disable(proxy, f"rejected the credentials (HTTP {response.status})"):
                logger.error(
                    "Proxy %s rejected the credentials (HTTP %d): they are missing or wrong; "
                    "removed from the pool for this crawl",
                    proxy.label,
                    response.status,
                )
            return self._resend(request, f"HTTP {response.status} via {proxy.label}") or response
        if response.status in self.ban_codes:
            self._inc("proxy/bans", proxy, "bans")
            if self.pool.bench(proxy, self.cooldown):
                logger.warning(
                    "Proxy %s banned (HTTP %d for %s): benched for %ss",
                    proxy.label,
                    response.status,
                    request.url,
                    self.cooldown,
                )
            return self._resend(request, f"HTTP {response.status} via {proxy.label}") or response
        return response

    def process_exception(self, request: Request, exception: Exception) -> Request | None:
        proxy = self._proxy_of(request)
        if proxy is None or not isinstance(exception, CONNECTION_ERRORS):
            return None
        if isinstance(exception, TunnelError) and "407" in str(exception):
            self._inc("proxy/auth_failures", proxy, "auth_failures")
            if self.pool.disable(proxy, "rejected the credentials (CONNECT 407)"):
                logger.error(
                    "Proxy %s rejected the credentials (CONNECT 407): they are missing or wrong; "
                    "removed from the pool for this crawl",
                    proxy.label,
                )
            return self._resend(request, f"CONNECT 407 via {proxy.label}")
        self._inc("proxy/errors", proxy, "errors")
        if self.pool.bench(proxy, self.cooldown):
            logger.warning(
                "Proxy %s failed (%s: %s): benched for %ss",
                proxy.label,
                type(exception).__name__,
                exception,
                self.cooldown,
            )
        return self._resend(request, f"{type(exception).__name__} via {proxy.label}")

    # --- helpers ---------------------------------------------------------------------------------

    def _proxy_of(self, request: Request) -> Proxy | None:
        """The pool entry ``request`` went through, if this middleware chose it."""
        label = request.meta.get(META_PROXY)
        proxy = self.pool.by_label.get(label) if label else None
        if proxy is None or request.meta.get("proxy") != proxy.url:
            return None
        return proxy

    def _resend(self, request: Request, reason: str) -> Request | None:
        """A copy of ``request`` for another proxy, or None to let the failure stand."""
        if not self.pool.any_usable():
            self._close_all_banned()
            return None
        retries = int(request.meta.get(META_RETRIES, 0))
        if retries >= self.max_retries:
            self.stats.inc_value("proxy/retries_exhausted")
            logger.warning(
                "Gave up re-sending %s through another proxy after %d attempts (%s)",
                request.url,
                retries + 1,
                reason,
            )
            return None
        retry = request.replace(dont_filter=True)
        retry.meta[META_RETRIES] = retries + 1
        # Unassigned, so process_request picks a fresh proxy; the credentials of the old one
        # must not travel with the copy through the scheduler.
        for key in ("proxy", META_PROXY, "_auth_proxy"):
            retry.meta.pop(key, None)
        retry.headers.pop(b"Proxy-Authorization", None)
        self.stats.inc_value("proxy/retries")
        logger.debug("Re-sending %s through another proxy (%s)", request.url, reason)
        return retry

    def _close_all_banned(self) -> None:
        if self._closing:
            return
        self._closing = True
        reasons = ", ".join(
            f"{proxy.label}: {proxy.disabled or 'benched'}" for proxy in self.pool.proxies
        )
        logger.error("Every proxy is banned or unusable (%s); closing the spider", reasons)
        self.stats.set_value("proxy/all_banned", True)
        try:
            engine = self.crawler.engine
        except RuntimeError:  # no crawl running: the middleware is being driven on its own
            engine = None
        if engine is not None:
            closing = deferred_from_coro(engine.close_spider_async(reason=CLOSE_REASON))
            closing.addErrback(
                lambda failure: logger.error("Could not close the spider: %s", failure.value)
            )

    def _inc(self, total_key: str, proxy: Proxy, name: str) -> None:
        self.stats.inc_value(total_key)
        self.stats.inc_value(f"proxy/{proxy.label}/{name}")
