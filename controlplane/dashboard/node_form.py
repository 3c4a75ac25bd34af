"""The form for adding and editing a node; the rules themselves are :mod:`controlplane.nodes.services`.

The password is write-only: the input never carries the stored value back into the page, and an
empty password on an edit keeps the stored one.
"""

from __future__ import annotations

from typing import Any

from django import forms

from controlplane.nodes.models import Node
from controlplane.refusals import Refused


class NodeForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="letters, digits, '_', '.', '-'")
    url = forms.CharField(
        label="URL", max_length=300, help_text="the Scrapyd node, e.g. http://10.0.0.5:6800"
    )
    username = forms.CharField(max_length=150, required=False, help_text="HTTP basic auth")
    password = forms.CharField(
        max_length=300,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    tags = forms.CharField(
        max_length=500, required=False, help_text="comma-separated, e.g. eu, big"
    )
    weight = forms.FloatField(
        initial=1.0, help_text="share of work relative to capacity; 2 takes twice as much"
    )
    capacity = forms.IntegerField(initial=4, help_text="jobs at once (Scrapyd max_proc)")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, node: Node | None = None, **kwargs: Any) -> None:
        self.node = node
        if node is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": node.name,
                "url": node.url,
                "username": node.username,
                "tags": ", ".join(node.tags or []),
                "weight": node.weight,
                "capacity": node.capacity,
                "enabled": node.enabled,
            }
        super().__init__(*args, **kwargs)
        if node is not None:
            # Renaming would split the node's history from its self-registration (by name).
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "a node keeps its name"
            self.fields["password"].help_text = (
                "a password is set; leave empty to keep it"
                if node.password
                else "none is set; leave empty for none"
            )

    def clean_tags(self) -> list[str]:
        text = self.cleaned_data.get("tags", "")
        tags: list[str] = []
        for tag in (t.strip() for t in text.replace("\n", ",").split(",")):
            if tag and tag not in tags:
                tags.append(tag)
        return tags

    def data_for_service(self) -> dict[str, Any]:
        """What changed, in the service's terms (an empty password on an edit keeps the old)."""
        data = dict(self.cleaned_data)
        if self.node is not None:
            data.pop("name", None)
            if not data.get("password"):
                data.pop("password", None)
        return data

    def add_refusal(self, exc: Refused) -> None:
        """The service's reasons beside the fields they are about, the rest above the form."""
        placed = False
        for name, problems in exc.fields.items():
            target = name if name in self.fields and not self.fields[name].disabled else None
            for problem in problems:
                self.add_error(target, problem)
            placed = placed or target is not None
        if not placed:
            self.add_error(None, exc.message)
