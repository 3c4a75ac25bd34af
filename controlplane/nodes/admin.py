from django import forms
from django.contrib import admin

from controlplane.nodes.models import Node


class NodeForm(forms.ModelForm):
    # Write-only: the stored password is never rendered back into the page.
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="leave empty to keep the current password",
    )

    class Meta:
        model = Node
        fields = [
            "name",
            "url",
            "username",
            "password",
            "tags",
            "weight",
            "capacity",
            "enabled",
            "draining",
        ]

    def clean_password(self) -> str:
        value = self.cleaned_data.get("password", "")
        if not value and self.instance.pk:
            return self.instance.password
        return value


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    form = NodeForm
    list_display = ["name", "url", "state", "capacity", "weight", "running", "pending", "last_seen"]
    list_filter = ["state", "enabled", "draining"]
    search_fields = ["name", "url"]
    readonly_fields = [
        "state",
        "state_since",
        "last_seen",
        "last_checked",
        "last_latency",
        "last_error",
        "consecutive_failures",
        "scrapyd_version",
        "running",
        "pending",
        "self_registered",
    ]
