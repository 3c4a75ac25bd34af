"""Dashboard section: alerts. Channels and rules (every role reads them; admins change them, as
on the REST API), test alerts, and the delivery history with each delivery's events and attempts.

Every change goes through :mod:`controlplane.alerts.services`, which validates, hides secrets and
audits; these views turn forms into its data and its refusals back into messages beside the
fields. No page ever carries a channel's secret or apprise URLs; a webhook's full URL (its path
may hold a token) is only in an admin's edit form, as on the REST API; lists show its host.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path

from controlplane.accounts.roles import Role
from controlplane.alerts import services
from controlplane.alerts.models import AlertRule, Channel, Delivery
from controlplane.dashboard import alert_stats
from controlplane.dashboard.access import requires
from controlplane.dashboard.alert_forms import CHANNEL_FORMS, ChannelForm, RuleForm
from controlplane.dashboard.task_form import timezone_names
from controlplane.dashboard.templatetags.alerts_tags import channel_target
from controlplane.refusals import Refused


def _status(request: HttpRequest) -> int:
    """A form shown again after a submit was refused (by the form or the service) is a 422."""
    return 422 if request.method == "POST" else 200


# --- channels and rules ------------------------------------------------------------------------
@requires()
def alert_overview(request: HttpRequest) -> HttpResponse:
    context = {
        "channels": list(alert_stats.channels()),
        "rules": list(alert_stats.rules()),
        "kinds": list(Channel.Kind.values),
    }
    return render(request, "dashboard/alerts/overview.html", context)


def _channel_form(request: HttpRequest, form: ChannelForm, channel: Channel | None) -> HttpResponse:
    if request.method == "POST" and form.is_valid():
        try:
            if channel is None:
                channel = services.create_channel(form.data_for_service(), actor=request.actor)
                verb = "added"
            else:
                services.update_channel(channel, form.data_for_service(), actor=request.actor)
                verb = "saved"
        except Refused as exc:
            form.add_refusal(exc)
        else:
            messages.success(request, f"Channel {channel.name} {verb}.")
            return redirect("dashboard:alerts")
    context = {"form": form, "channel": channel, "kind": form.kind}
    return render(request, "dashboard/alerts/channel_form.html", context, status=_status(request))


@requires(Role.ADMIN)
def channel_add(request: HttpRequest, kind: str) -> HttpResponse:
    form_class = CHANNEL_FORMS.get(kind)
    if form_class is None:
        raise Http404(f"no channel kind {kind!r}")
    return _channel_form(request, form_class(request.POST or None), None)


@requires(Role.ADMIN)
def channel_edit(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(Channel, pk=channel_id)
    form = CHANNEL_FORMS[channel.kind](request.POST or None, channel=channel)
    return _channel_form(request, form, channel)


@requires(Role.ADMIN, post=True)
def channel_delete(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(Channel, pk=channel_id)
    rules = channel.rules.count()
    services.delete_channel(channel, actor=request.actor)
    gone = f" with its {rules} rule{'s' if rules != 1 else ''}" if rules else ""
    messages.success(request, f"Channel {channel.name} deleted{gone}, and its delivery history.")
    return redirect("dashboard:alerts")


@requires(Role.ADMIN, post=True)
def channel_test(request: HttpRequest, channel_id: int) -> HttpResponse:
    """Sends at once (the service does, in this request) and says how it went."""
    channel = get_object_or_404(Channel, pk=channel_id)
    delivery = services.send_test(channel, actor=request.actor)
    where = f"{channel.name} ({channel_target(channel)})"
    if delivery.state == Delivery.State.SENT:
        messages.success(request, f"Test alert sent to {where}.")
    else:
        messages.error(request, f"Test alert to {where} failed: {delivery.last_error}")
    if request.POST.get("next") == "edit":
        return redirect("dashboard:alert_channel_edit", channel_id=channel.pk)
    return redirect("dashboard:alerts")


# --- rules ---------------------------------------------------------------------------------------
def _rule_form(request: HttpRequest, rule: AlertRule | None) -> HttpResponse:
    form = RuleForm(request.POST or None, rule=rule)
    if request.method == "POST" and form.is_valid():
        try:
            if rule is None:
                rule = services.create_rule(form.data_for_service(), actor=request.actor)
                verb = "added"
            else:
                services.update_rule(rule, form.data_for_service(), actor=request.actor)
                verb = "saved"
        except Refused as exc:
            form.add_refusal(exc)
        else:
            messages.success(request, f"Rule {rule.name} {verb}.")
            return redirect("dashboard:alerts")
    context: dict[str, Any] = {
        "form": form,
        "rule": rule,
        "timezones": timezone_names(),
        "has_channels": Channel.objects.exists(),
    }
    return render(request, "dashboard/alerts/rule_form.html", context, status=_status(request))


@requires(Role.ADMIN)
def rule_add(request: HttpRequest) -> HttpResponse:
    return _rule_form(request, None)


@requires(Role.ADMIN)
def rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    return _rule_form(request, get_object_or_404(alert_stats.rules(), pk=rule_id))


@requires(Role.ADMIN, post=True)
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(alert_stats.rules(), pk=rule_id)
    services.delete_rule(rule, actor=request.actor)
    messages.success(request, f"Rule {rule.name} deleted; its sent alerts stay in the history.")
    return redirect("dashboard:alerts")


# --- the delivery history ------------------------------------------------------------------------
@requires()
def delivery_list(request: HttpRequest) -> HttpResponse:
    """Newest first by keyset cursor; the first page refreshes itself (htmx)."""
    filters = {key: request.GET.get(key, "").strip() for key in ("state", "channel")}
    state = filters["state"] if filters["state"] in Delivery.State.values else None
    channel = None
    if filters["channel"]:
        channel = Channel.objects.filter(name=filters["channel"]).first()
        if channel is None:
            raise Http404(f"no channel named {filters['channel']!r}")
    cursor = request.GET.get("cursor") or None
    context = {
        "page": alert_stats.delivery_page(state, channel, cursor),
        "filters": filters,
        "states": list(Delivery.State.values),
        "channel_names": list(Channel.objects.values_list("name", flat=True)),
        "live": cursor is None,
    }
    if request.headers.get("HX-Request"):
        return render(request, "dashboard/alerts/_deliveries.html", context)
    return render(request, "dashboard/alerts/deliveries.html", context)


@requires()
def delivery_detail(request: HttpRequest, delivery_id: int) -> HttpResponse:
    detail = alert_stats.delivery_detail(delivery_id)
    if detail is None:
        raise Http404(f"no delivery {delivery_id}")
    return render(request, "dashboard/alerts/delivery.html", {"detail": detail})


urlpatterns = [
    path("", alert_overview, name="alerts"),
    path("channels/new/<slug:kind>/", channel_add, name="alert_channel_add"),
    path("channels/<int:channel_id>/edit/", channel_edit, name="alert_channel_edit"),
    path("channels/<int:channel_id>/delete/", channel_delete, name="alert_channel_delete"),
    path("channels/<int:channel_id>/test/", channel_test, name="alert_channel_test"),
    path("rules/new/", rule_add, name="alert_rule_add"),
    path("rules/<int:rule_id>/edit/", rule_edit, name="alert_rule_edit"),
    path("rules/<int:rule_id>/delete/", rule_delete, name="alert_rule_delete"),
    path("deliveries/", delivery_list, name="alert_deliveries"),
    path("deliveries/<int:delivery_id>/", delivery_detail, name="alert_delivery"),
]
