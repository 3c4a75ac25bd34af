"""BaseSpider: declared, validated spider arguments and the Scrapy 2.16+ ``start()`` entry point.

Spider arguments arrive as strings from ``scrapy crawl -a`` or Scrapyd's ``schedule.json``. A typo
should stop the run before a single request with a message that names the problem, rather than
becoming an attribute nobody reads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import scrapy

logger = logging.getLogger(__name__)

_REQUIRED = object()


class SpiderArgumentError(ValueError):
    """A spider argument is unknown, missing or malformed."""


def url_argument(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return number


def bool_argument(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Arg:
    """Declaration of one spider argument."""

    parse: Callable[[str], Any] = str
    default: Any = _REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return number


# What the control plane passes a task that runs after another one ("pass upstream"): every
# spider accepts them, so any spider can be chained. Read them from ``self.upstream``.
UPSTREAM_ARGUMENTS: dict[str, Callable[[str], Any]] = {
    "upstream_run": _count,
    "upstream_task": str,
    "upstream_state": str,
    "upstream_items": _count,
    "upstream_pages": _count,
    "upstream_errors": _count,
}


class BaseSpider(scrapy.Spider):
    """A spider whose arguments are declared in ``arguments`` and checked on construction.

    Names starting with ``_`` (Scrapyd's ``_job``, ``_version``) are passed through untouched;
    the upstream run's figures of a chained task (:data:`UPSTREAM_ARGUMENTS`) land in
    ``self.upstream``.
    """

    arguments: ClassVar[dict[str, Arg]] = {}

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        passthrough = {key: value for key, value in kwargs.items() if key.startswith("_")}
        self.upstream = self.parse_upstream(
            {key: kwargs.pop(key) for key in list(kwargs) if key in UPSTREAM_ARGUMENTS}
        )
        given = {key: value for key, value in kwargs.items() if not key.startswith("_")}
        values = self.validate_arguments(given)
        super().__init__(name, **passthrough)
        for key, value in values.items():
            setattr(self, key, value)

    @classmethod
    def parse_upstream(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The upstream run's figures, typed; a malformed one stops the run like a bad argument."""
        values: dict[str, Any] = {}
        for key, raw in given.items():
            try:
                values[key] = UPSTREAM_ARGUMENTS[key](raw) if isinstance(raw, str) else raw
            except (ValueError, TypeError) as exc:
                message = f"invalid arguments for spider {cls.name!r}: argument {key!r}: {exc}"
                logger.error(message)
                raise SpiderArgumentError(message) from None
        return values

    @classmethod
    def validate_arguments(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Parse ``given`` against ``arguments``; raise one error naming every problem."""
        problems: list[str] = []
        unknown = sorted(set(given) - set(cls.arguments))
        if unknown:
            known = ", ".join(sorted(cls.arguments)) or "none"
            problems.append(f"unknown argument(s) {', '.join(unknown)} (known: {known})")
        values: dict[str, Any] = {}
        for key, spec in cls.arguments.items():
            if key not in given:
                if spec.required:
                    problems.append(f"missing required argument {key!r}")
                else:
                    values[key] = spec.default
                continue
            raw = given[key]
            try:
                values[key] = spec.parse(raw) if isinstance(raw, str) else raw
            except (ValueError, TypeError) as exc:
                problems.append(f"argument {key!r}: {exc}")
        if problems:
            message = f"invalid arguments for spider {cls.name!r}: " + "; ".join(problems)
            logger.error(message)
            raise SpiderArgumentError(message)
        return values

    def start_urls_from_arguments(self) -> Iterable[str]:
        """The URLs to start from; subclasses usually read them from an argument."""
        return list(getattr(self, "start_urls", []))

    async def start(self) -> AsyncIterator[Any]:
        for url in self.start_urls_from_arguments():
            yield scrapy.Request(url, callback=self.parse)
