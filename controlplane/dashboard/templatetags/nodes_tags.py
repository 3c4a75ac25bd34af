"""Template helpers of the nodes and projects pages: node states, latencies, deployments."""

from __future__ import annotations

from django import template
from django.utils.html import format_html

from controlplane.dashboard.templatetags.dashboard import badge

register = template.Library()

# How a node's deployment of a version is shown: state -> (badge class, label).
DEPLOYMENT_BADGES = {
    "deployed": ("up", "deployed"),
    "failed": ("failed", "failed"),
    "removed": ("disabled", "removed"),
    "pending": ("pending", "pending"),
    "missing": ("missed", "missing"),
    "absent": ("unknown", "not there"),
}


@register.simple_tag
def node_badge(node) -> str:
    """Disabled or draining first (what an operator must know), the health state beside."""
    if node.display_state == node.state:
        return badge(node.state)
    return format_html("{} {}", badge(node.display_state), badge(node.state))


@register.simple_tag
def deployment_badge(state: str, title: str = "") -> str:
    css, label = DEPLOYMENT_BADGES.get(state, ("unknown", state))
    return format_html(
        '<span class="badge state-{}" data-deployment="{}" title="{}">{}</span>',
        css,
        state,
        title,
        label,
    )


@register.filter
def ms(seconds: float | None) -> str:
    """A latency in milliseconds, or '-'."""
    if seconds is None:
        return "-"
    return f"{1000 * float(seconds):.0f} ms"


@register.filter
def percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}%" if value < 99.95 else "100%"
