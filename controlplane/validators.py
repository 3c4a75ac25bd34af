"""Validators shared by models and APIs: every value from outside is checked before it is stored."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
VERSION_RE = re.compile(r"^[0-9]{1,18}\Z")
MAX_ARG_VALUE = 4096
_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}\Z")


def validate_node_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{value!r} is not an http(s) URL of a Scrapyd node")
    if parts.query or parts.fragment:
        raise ValidationError("a node URL has no query string or fragment")
    if parts.username or parts.password:
        raise ValidationError("put node credentials in username/password, not in the URL")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValidationError(f"{value!r}: {exc}") from exc


def validate_name(value: str) -> None:
    if not NAME_RE.match(value or ""):
        raise ValidationError(
            f"{value!r} is not a valid name: letters, digits, '_', '.', '-', up to 64 characters"
        )


def validate_version(value: str) -> None:
    if not VERSION_RE.match(value or ""):
        raise ValidationError(
            f"version {value!r} must be digits only (e.g. 20261122093000), so versions sort correctly"
        )


def validate_str_mapping(value: Any, what: str) -> None:
    """Spider args and settings: a flat mapping of names to short strings."""
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be an object of name: value pairs")
    for key, item in value.items():
        if not isinstance(key, str) or not _ARG_NAME_RE.match(key):
            raise ValidationError(f"{what}: {key!r} is not a valid name")
        if not isinstance(item, str | int | float | bool):
            raise ValidationError(f"{what}: {key} must be a string, got {type(item).__name__}")
        # str() of an int over 4300 digits raises; 3 bits a digit keeps it under that first.
        huge_int = isinstance(item, int) and item.bit_length() > MAX_ARG_VALUE * 3
        if huge_int or len(str(item)) > MAX_ARG_VALUE:
            raise ValidationError(f"{what}: {key} is longer than {MAX_ARG_VALUE} characters")
        if isinstance(item, str) and "\x00" in item:
            # PostgreSQL stores no NUL in text or JSON, and no spider expects one.
            raise ValidationError(f"{what}: {key} contains a NUL character")


def validate_spider_args(value: Any) -> None:
    validate_str_mapping(value, "spider arguments")
    reserved = sorted(
        k for k in value if k.startswith("_") or k in ("project", "spider", "jobid", "setting")
    )
    if reserved:
        raise ValidationError(f"spider arguments: {', '.join(reserved)} are reserved by Scrapyd")


def validate_spider_settings(value: Any) -> None:
    validate_str_mapping(value, "spider settings")


def validate_tags(value: Any) -> None:
    if not isinstance(value, list) or not all(
        isinstance(t, str) and NAME_RE.match(t) for t in value
    ):
        raise ValidationError("tags must be a list of names (letters, digits, '_', '.', '-')")


def validate_caps(value: Any) -> None:
    """A map of names (spiders, tags) to caps on running jobs: whole numbers, at least 1."""
    if not isinstance(value, dict):
        raise ValidationError("caps must be a map of name to a whole number of at least 1")
    for name, cap in value.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValidationError(f"{name!r} is not a name (letters, digits, '_', '.', '-')")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValidationError(f"the cap of {name} must be a whole number of at least 1")


def validate_webhook_url(value: str) -> None:
    """An alert webhook: an http(s) URL with a host (a query is allowed, a fragment is not)."""
    parts = urlsplit(value or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an http:// or https:// URL with a host")
    if parts.fragment:
        raise ValidationError("a webhook URL has no fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise ValidationError(f"malformed port: {exc}") from exc


def validate_email_list(value: Any, limit: int = 50) -> None:
    """A non-empty list of at most ``limit`` email addresses."""
    from django.core.validators import validate_email

    if not isinstance(value, list) or not value:
        raise ValidationError("give a list of one or more email addresses")
    if len(value) > limit:
        raise ValidationError(f"at most {limit} recipients")
    bad = []
    for address in value:
        try:
            validate_email(address if isinstance(address, str) else "")
        except ValidationError:
            bad.append(repr(address))
    if bad:
        raise ValidationError(f"not a valid email address: {', '.join(bad)}")
