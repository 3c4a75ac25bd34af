from django.contrib import admin

from controlplane.deploys.models import NodeDeployment, Project, Version


class VersionInline(admin.TabularInline):
    model = Version
    fields = ["version", "size", "sha256", "spiders", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "current_version", "created_at"]
    inlines = [VersionInline]


class NodeDeploymentInline(admin.TabularInline):
    model = NodeDeployment
    fields = ["node", "state", "message", "attempts", "updated_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Version)
class VersionAdmin(admin.ModelAdmin):
    list_display = ["project", "version", "size", "created_at"]
    list_filter = ["project"]
    exclude = ["egg"]
    readonly_fields = ["project", "version", "sha256", "size", "spiders", "created_at"]
    inlines = [NodeDeploymentInline]

    def has_add_permission(self, request) -> bool:
        return False  # eggs arrive through `crawlfleet deploy` or the REST API, which check them
