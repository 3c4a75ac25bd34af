from django.contrib import admin

from controlplane.api.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "role", "prefix", "created_at", "last_used", "revoked"]
    readonly_fields = ["prefix", "created_at", "last_used"]
    fields = ["name", "role", "revoked", "prefix", "created_at", "last_used"]

    def has_add_permission(self, request) -> bool:
        return (
            False  # tokens are created with `crawlfleet token create`, which shows the secret once
        )
