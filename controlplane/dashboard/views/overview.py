"""Dashboard section: the overview (fleet health, jobs now, the last 24 h, next fires, charts).

The page is three parts: the live tiles, nodes and next fires (re-fetched by htmx every few
seconds from ``overview/live``) and the charts (every minute from ``overview/charts``). Each part
is its own view, so a poll only pays for the queries of its part.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.urls import path
from django.utils import timezone

from controlplane.dashboard.access import requires
from controlplane.jobs import fleetstats
from controlplane.scheduling.upcoming import next_fires

LIVE_EVERY = "5s"
CHARTS_EVERY = "60s"
NEXT_FIRES = 8
# Outcome colours: the stylesheet's ok/bad/warn/neutral tones, readable on light and dark.
OUTCOME_COLOURS = {
    "succeeded": "#2da44e",
    "degraded": "#d4a72c",
    "failed": "#cf222e",
    "lost": "#8250df",
    "timed_out": "#bf8700",
    "cancelled": "#8c959f",
}
OUTCOME_LABELS = {
    "succeeded": "succeeded",
    "degraded": "degraded",
    "failed": "failed",
    "lost": "lost",
    "timed_out": "timed out",
    "cancelled": "cancelled",
}


def fragment(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A polled part of the page: when the session has ended, send the whole page to the login
    form (``HX-Redirect``) instead of letting htmx swap the login form into a tile."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.headers.get("HX-Request") and not request.user.is_authenticated:
            response = HttpResponse(status=401)
            response["HX-Redirect"] = redirect_to_login(resolve_url("dashboard:overview"))[
                "Location"
            ]
            return response
        return view(request, *args, **kwargs)

    return wrapper


def _span(request: HttpRequest) -> str:
    span = request.GET.get("range", "24h")
    return span if span in fleetstats.SPANS else "24h"


def live_context() -> dict[str, Any]:
    now = timezone.now()
    jobs, day = fleetstats.job_figures(now)
    return {
        "now": now,
        "fleet": fleetstats.fleet_health(),
        "jobs": jobs,
        "day": day,
        "fires": next_fires(NEXT_FIRES, now),
        "live_every": LIVE_EVERY,
    }


def charts_context(span: str) -> dict[str, Any]:
    data = fleetstats.series(span)
    labels = data.labels
    unit = "hour" if span == "24h" else "day"
    outcomes = {
        "type": "bar",
        "labels": labels,
        "datasets": [
            {
                "label": OUTCOME_LABELS[state],
                "data": counts,
                "backgroundColor": OUTCOME_COLOURS[state],
                "stack": "jobs",
            }
            for state, counts in data.outcomes.items()
        ],
        "options": {
            "scales": {
                "x": {"stacked": True},
                "y": {
                    "ticks": {"precision": 0},
                    "stacked": True,
                    "beginAtZero": True,
                    "title": {"display": True, "text": f"jobs per {unit}"},
                },
            },
        },
    }
    volume = {
        "type": "line",
        "labels": labels,
        "datasets": [
            {
                "label": "items",
                "data": data.items,
                "yAxisID": "y",
                "borderColor": "#0969da",
                "backgroundColor": "#0969da",
            },
            {
                "label": "pages",
                "data": data.pages,
                "yAxisID": "y",
                "borderColor": "#2da44e",
                "backgroundColor": "#2da44e",
            },
            {
                "label": "errors",
                "data": data.errors,
                "yAxisID": "errors",
                "borderColor": "#cf222e",
                "backgroundColor": "#cf222e",
            },
        ],
        "options": {
            "elements": {"point": {"radius": 2}, "line": {"borderWidth": 2}},
            "scales": {
                "y": {
                    "beginAtZero": True,
                    "ticks": {"precision": 0},
                    "title": {"display": True, "text": f"items, pages per {unit}"},
                },
                "errors": {
                    "position": "right",
                    "beginAtZero": True,
                    "ticks": {"precision": 0},
                    "grid": {"drawOnChartArea": False},
                    "title": {"display": True, "text": "errors"},
                },
            },
        },
    }
    return {
        "span": span,
        "spans": [("24h", "24 hours"), ("7d", "7 days")],
        "unit": unit,
        "ended": sum(sum(counts) for counts in data.outcomes.values()),
        "outcomes_json": json.dumps(outcomes),
        "volume_json": json.dumps(volume),
        "charts_every": CHARTS_EVERY,
    }


@requires()
def overview(request: HttpRequest) -> HttpResponse:
    context = {**live_context(), **charts_context(_span(request))}
    return render(request, "dashboard/overview.html", context)


@fragment
@requires()
def live(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview/_live.html", live_context())


@fragment
@requires()
def charts(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview/_charts.html", charts_context(_span(request)))


urlpatterns = [
    path("", overview, name="overview"),
    path("overview/live", live, name="overview-live"),
    path("overview/charts", charts, name="overview-charts"),
]
