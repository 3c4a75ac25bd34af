"""Template helpers shared by every dashboard page: state badges, nav links, query strings."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.simple_tag
def badge(state: str, label: str = "") -> str:
    """A state badge; the CSS colours ``state-<name>``."""
    return format_html('<span class="badge state-{}">{}</span>', state, label or state)


@register.simple_tag(takes_context=True)
def nav_link(context: dict[str, Any], url_name: str, label: str) -> str:
    url = reverse(url_name)
    path = context["request"].path
    current = path == url if url == reverse("dashboard:overview") else path.startswith(url)
    return format_html(
        '<li><a href="{}"{}>{}</a></li>', url, ' aria-current="page"' if current else "", label
    )


@register.simple_tag(takes_context=True)
def query_with(context: dict[str, Any], key: str, value: Any) -> str:
    """The current query string with ``key`` set (filters survive paging)."""
    query = context["request"].GET.copy()
    query[key] = value
    return query.urlencode()


@register.simple_tag(takes_context=True)
def query_without(context: dict[str, Any], key: str) -> str:
    query = context["request"].GET.copy()
    query.pop(key, None)
    return query.urlencode()


@register.filter
def ago(value: datetime | None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', or the date for older times."""
    if value is None:
        return "never"
    seconds = (timezone.now() - value).total_seconds()
    if seconds < 0:
        return f"in {duration(-seconds)}"
    if seconds < 86400:
        return f"{duration(seconds)} ago"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


@register.filter
def duration(seconds: float | timedelta | None) -> str:
    if seconds is None:
        return "-"
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
