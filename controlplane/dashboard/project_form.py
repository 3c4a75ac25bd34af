"""The egg upload form; the rules (egg, version, name) are :mod:`controlplane.deploys.services`."""

from __future__ import annotations

from typing import Any

from django import forms

from controlplane.lib.eggs import MAX_EGG_BYTES
from controlplane.refusals import Refused


class UploadForm(forms.Form):
    project = forms.CharField(
        max_length=64, help_text="a new project is created with its first version"
    )
    version = forms.CharField(
        max_length=18,
        required=False,
        help_text="digits only, e.g. 20261201093000; empty: the egg's own version",
    )
    egg = forms.FileField(
        help_text="built with <code>crawlfleet egg</code> or <code>scrapyd-deploy --build-egg</code>"
    )

    def __init__(self, *args: Any, project_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project_name = project_name
        if project_name is not None:
            del self.fields["project"]
        self.fields["egg"].widget.attrs["accept"] = ".egg,application/zip"

    def clean_egg(self) -> bytes:
        upload = self.cleaned_data["egg"]
        if upload.size > MAX_EGG_BYTES:
            raise forms.ValidationError(f"larger than the limit of {MAX_EGG_BYTES} bytes")
        return upload.read()

    @property
    def target_project(self) -> str:
        return self.project_name or self.cleaned_data.get("project", "")

    def add_refusal(self, exc: Refused) -> None:
        placed = False
        for name, problems in exc.fields.items():
            target = name if name in self.fields else None
            for problem in problems:
                self.add_error(target, problem)
            placed = placed or target is not None
        if not placed:
            self.add_error(None, exc.message)
