from django.contrib import admin

from controlplane.accounts.models import ApiToken, AuditEntry


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "role", "prefix", "created_at", "last_used", "revoked")
    list_filter = ("role", "revoked")
    readonly_fields = ("prefix", "created_at", "last_used")
    fields = ("name", "role", "prefix", "revoked", "created_at", "last_used")

    def has_add_permission(self, request):  # secrets are shown once, by `crawlfleet token create`
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "actor_kind", "action", "target", "ip")
    list_filter = ("action", "actor_kind")
    search_fields = ("actor", "target")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
