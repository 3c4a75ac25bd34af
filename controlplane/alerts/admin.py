"""Read-only views of the alert queue and the delivery history. Channels and rules are changed
through the REST API (later the dashboard), whose services validate, hide secrets and audit."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.alerts.models import AlertEvent, Delivery, DeliveryAttempt


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "started_at", "finished_at", "ok", "error"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnly):
    list_display = [
        "created_at",
        "channel",
        "rule",
        "group_key",
        "state",
        "event_count",
        "attempts",
    ]
    list_filter = ["state", "channel__kind", "digest", "test"]
    search_fields = ["group_key", "subject", "uid"]
    list_select_related = ["channel", "rule"]
    exclude = ["events"]
    inlines = [AttemptInline]


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnly):
    list_display = ["created_at", "kind", "summary", "group_key", "routed_at"]
    list_filter = ["kind"]
    search_fields = ["summary", "group_key"]
