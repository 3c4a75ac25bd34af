"""User-Agent rotation that still lets a spider or a single request choose its own.

Sites that fingerprint crawlers look at the User-Agent first; sending the same one for thousands of
requests is the easiest pattern to spot. This middleware replaces Scrapy's stock
``UserAgentMiddleware`` (disabled in ``settings.py``) and picks a User-Agent per request from a
configured pool, unless something more specific asked for one. In order of precedence:

1. an explicit ``User-Agent`` header on the request (set by whoever built the request);
2. ``request.meta["user_agent"]``;
3. the spider's own User-Agent: ``USER_AGENT`` in the spider's ``custom_settings`` (or on the
   command line, ``-s USER_AGENT=...``), or the older ``user_agent`` spider attribute, which Scrapy
   2.19 deprecates in favour of the setting but still honours;
4. the next entry of the pool (``USER_AGENT_ROTATION``: ``round_robin`` or ``random``).

Settings: ``USER_AGENT_ENABLED`` (False: no rotation; unpinned requests get ``USER_AGENT`` as with
stock Scrapy, rather than no User-Agent at all), ``USER_AGENT_LIST``, ``USER_AGENT_FILE`` (one per line, ``#`` comments; when set it
replaces the list), ``USER_AGENT_ROTATION``. A pool that cannot be built is an error at startup: a
crawl that silently falls back to ``Scrapy/2.x`` is worse than one that does not start.

Note: ``-s USER_AGENT_LIST=a,b`` and the ``USER_AGENT_LIST`` environment variable split on commas,
and most real User-Agents contain a comma; pass a JSON array or use ``USER_AGENT_FILE``.
"""

from __future__ import annotations

import itertools
import logging
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scrapy import Request, Spider, signals
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import SETTINGS_PRIORITIES

from crawler.statsbuffer import StatsBuffer

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings


logger = logging.getLogger(__name__)

ROTATIONS = ("round_robin", "random")
# Set on requests whose User-Agent this middleware chose, so a retry or a redirect (which copy the
# headers) gets a fresh pick instead of being mistaken for an explicitly pinned request.
_ROTATED_META = "_rotated_user_agent"


class UserAgentConfigError(ValueError):
    """The User-Agent settings cannot produce a usable pool."""


def read_user_agent_file(path: str | Path) -> list[str]:
    """User-Agents from ``path``: one per line, blank lines and ``#`` comments ignored."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserAgentConfigError(
            f"USER_AGENT_FILE {str(file)!r} cannot be read: {exc.strerror or exc}"
        ) from exc
    agents = [line.strip() for line in text.splitlines()]
    agents = [line for line in agents if line and not line.startswith("#")]
    if not agents:
        raise UserAgentConfigError(f"USER_AGENT_FILE {str(file)!r} contains no User-Agent")
    return agents


def load_user_agents(settings: BaseSettings) -> list[str]:
    """The pool from ``USER_AGENT_FILE`` if set, else ``USER_AGENT_LIST``; never empty."""
    path = settings.get("USER_AGENT_FILE") or ""
    if path:
        return read_user_agent_file(path)
    agents = [str(agent).strip() for agent in settings.getlist("USER_AGENT_LIST")]
    agents = [agent for agent in agents if agent]
    if not agents:
        raise UserAgentConfigError(
            "USER_AGENT_LIST is empty and USER_AGENT_FILE is not set: "
            "configure at least one User-Agent or set USER_AGENT_ENABLED=False"
        )
    return agents


class RotatingUserAgentMiddleware:
    """Give each request a User-Agent from a pool, respecting spider and request pins."""

    def __init__(
        self,
        user_agents: Sequence[str],
        *,
        rotation: str = "round_robin",
        enabled: bool = True,
        default_user_agent: str | None = None,
        spider_user_agent: str | None = None,
        counters: StatsBuffer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if rotation not in ROTATIONS:
            raise UserAgentConfigError(
                f"USER_AGENT_ROTATION must be one of {', '.join(ROTATIONS)}, got {rotation!r}"
            )
        if enabled and not user_agents:
            raise UserAgentConfigError("the User-Agent pool is empty")
        self.user_agents = list(user_agents)
        self.rotation = rotation
        self.enabled = enabled
        self.default_user_agent = default_user_agent
        self.spider_user_agent = spider_user_agent
        self.counters = counters
        self._rng = rng or random.Random()
        self._cycle: Iterator[str] = itertools.cycle(self.user_agents)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        enabled = settings.getbool("USER_AGENT_ENABLED", True)
        # USER_AGENT at spider priority or above was chosen for this crawl (custom_settings or -s);
        # at project/default priority it is only the fallback for USER_AGENT_ENABLED=False.
        pinned = settings.getpriority("USER_AGENT") or 0
        spider_user_agent = (
            settings.get("USER_AGENT") if pinned >= SETTINGS_PRIORITIES["spider"] else None
        )
        try:
            middleware = cls(
                load_user_agents(settings) if enabled else [],
                rotation=str(settings.get("USER_AGENT_ROTATION") or "round_robin").strip().lower(),
                enabled=enabled,
                default_user_agent=settings.get("USER_AGENT"),
                spider_user_agent=spider_user_agent,
                counters=StatsBuffer.of(crawler),
            )
        except UserAgentConfigError as exc:
            logger.error("User-Agent rotation is misconfigured: %s", exc)
            raise
        crawler.signals.connect(middleware.spider_opened, signal=signals.spider_opened)
        return middleware

    def spider_opened(self, spider: Spider) -> None:
        attribute = getattr(spider, "user_agent", None)
        if attribute:
            warnings.warn(
                f"spider {spider.name!r}: the 'user_agent' attribute is deprecated by Scrapy; "
                "set USER_AGENT in custom_settings instead",
                ScrapyDeprecationWarning,
                stacklevel=2,
            )
            self.spider_user_agent = str(attribute)
        if self.enabled:
            logger.info(
                "User-Agent rotation: %d agent(s), %s%s",
                len(self.user_agents),
                self.rotation,
                ", pinned by the spider" if self.spider_user_agent else "",
            )

    def next_user_agent(self) -> str:
        """The next pool entry under the configured rotation."""
        if self.rotation == "random":
            return self._rng.choice(self.user_agents)
        return next(self._cycle)

    def process_request(self, request: Request) -> None:
        meta_agent = request.meta.get("user_agent")
        chosen_here = request.meta.get(_ROTATED_META, False)
        if b"User-Agent" in request.headers and not chosen_here:
            self._inc("useragent/pinned/header")
            return None
        if meta_agent:
            request.headers[b"User-Agent"] = str(meta_agent)
            request.meta.pop(_ROTATED_META, None)
            self._inc("useragent/pinned/request")
            return None
        if self.spider_user_agent:
            request.headers[b"User-Agent"] = self.spider_user_agent
            self._inc("useragent/pinned/spider")
            return None
        if not self.enabled:
            if self.default_user_agent:
                request.headers[b"User-Agent"] = self.default_user_agent
            return None
        request.headers[b"User-Agent"] = self.next_user_agent()
        request.meta[_ROTATED_META] = True
        self._inc("useragent/rotated")
        return None

    def _inc(self, key: str) -> None:
        if self.counters is not None:
            self.counters.inc(key)
