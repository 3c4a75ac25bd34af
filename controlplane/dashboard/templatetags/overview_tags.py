"""Overview helpers: links to pages that may not exist yet, and plural-aware counts."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

register = template.Library()


@register.simple_tag
def url_if(name: str, *args: Any, **kwargs: Any) -> str:
    """The URL of ``name``, or "" when no such page is installed (the link then stays text)."""
    try:
        return reverse(name, args=args or None, kwargs=kwargs or None)
    except NoReverseMatch:
        return ""
