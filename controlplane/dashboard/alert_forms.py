"""The forms of the alerts pages; the rules themselves are :mod:`controlplane.alerts.services`.

A channel's secrets (a webhook's signing key, apprise URLs) are write-only: their inputs never
carry a value back into the page, not even after a refused submit, and an empty one on an edit
keeps the stored value. The forms only shape the input; every check with a message is the
service's, so the REST API and these pages say the same thing.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms

from controlplane.alerts.models import AlertRule, Channel
from controlplane.deploys.models import Project
from controlplane.events import KINDS
from controlplane.refusals import Refused
from controlplane.scheduling.models import Task


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value (what was typed or what is stored)."""

    def format_value(self, value: Any) -> str | None:
        return None


class AnyChoices(forms.MultipleChoiceField):
    """Checkboxes whose values the service checks, so an unknown one gets the service's words."""

    def valid_value(self, value: str) -> bool:
        return True


def _lines(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,;]+", text or "") if part]


class RefusalsMixin:
    """The service's reasons beside the fields they are about, the rest above the form."""

    def add_refusal(self, exc: Refused) -> None:
        placed = False
        for name, problems in exc.fields.items():
            field = self.fields.get(name)  # type: ignore[attr-defined]
            target = name if field is not None and not field.disabled else None
            for problem in problems:
                self.add_error(target, problem)  # type: ignore[attr-defined]
            placed = placed or target is not None
        if not placed:
            self.add_error(None, exc.message)  # type: ignore[attr-defined]


class ChannelForm(RefusalsMixin, forms.Form):
    """The fields every kind has; one subclass per kind adds its own."""

    kind: str = ""
    field_order = ("name", "url", "secret", "clear_secret", "recipients", "apprise_urls", "enabled")
    name = forms.CharField(max_length=64, help_text="letters, digits, '_', '.', '-'")
    enabled = forms.BooleanField(
        required=False, initial=True, help_text="a disabled channel sends nothing"
    )

    def __init__(self, *args: Any, channel: Channel | None = None, **kwargs: Any) -> None:
        self.channel = channel
        if channel is not None and "initial" not in kwargs:
            kwargs["initial"] = self.initial_of(channel)
        super().__init__(*args, **kwargs)

    def initial_of(self, channel: Channel) -> dict[str, Any]:
        return {"name": channel.name, "enabled": channel.enabled}

    def data_for_service(self) -> dict[str, Any]:
        data = {"name": self.cleaned_data["name"], "enabled": self.cleaned_data["enabled"]}
        if self.channel is None:
            data["kind"] = self.kind
        return data


class WebhookForm(ChannelForm):
    kind = Channel.Kind.WEBHOOK
    url = forms.CharField(
        label="URL", max_length=500, help_text="the http(s) address each alert is POSTed to"
    )
    secret = forms.CharField(
        label="Signing secret",
        max_length=500,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="write-only: never shown again. At least 16 characters; each request is "
        "signed with HMAC-SHA256 (header X-Crawlfleet-Signature). Leave empty for unsigned.",
    )
    clear_secret = forms.BooleanField(
        label="Remove the signing secret", required=False, help_text="requests go unsigned"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.channel is None:
            del self.fields["clear_secret"]
        elif self.channel.secret:
            self.fields["secret"].help_text = (
                "a secret is set (write-only, never shown); leave empty to keep it, or type a "
                "new one (at least 16 characters) to replace it"
            )
        else:
            self.fields[
                "secret"
            ].help_text = (
                "none is set: requests go unsigned; type one (at least 16 characters) to sign them"
            )
            del self.fields["clear_secret"]

    def initial_of(self, channel: Channel) -> dict[str, Any]:
        return {**super().initial_of(channel), "url": channel.url}

    def data_for_service(self) -> dict[str, Any]:
        data = super().data_for_service()
        data["url"] = self.cleaned_data["url"]
        secret = self.cleaned_data.get("secret", "")
        if self.cleaned_data.get("clear_secret"):
            data["secret"] = ""
        elif secret or self.channel is None:
            data["secret"] = secret
        return data  # an empty secret on an edit is left out: the stored one is kept


class EmailForm(ChannelForm):
    kind = Channel.Kind.EMAIL
    recipients = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="one address a line (or separated by commas)",
    )

    def initial_of(self, channel: Channel) -> dict[str, Any]:
        return {**super().initial_of(channel), "recipients": "\n".join(channel.recipients or [])}

    def data_for_service(self) -> dict[str, Any]:
        return {**super().data_for_service(), "recipients": _lines(self.cleaned_data["recipients"])}


class AppriseForm(ChannelForm):
    kind = Channel.Kind.APPRISE
    apprise_urls = forms.CharField(
        label="Apprise URLs",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off", "spellcheck": "false"}),
        help_text="one a line, e.g. tgram://bot-token/chat-id. Write-only: they hold the "
        "services' tokens and are never shown again.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.channel is not None:
            schemes = ", ".join(self.channel.apprise_schemes) or "none"
            self.fields["apprise_urls"].help_text = (
                f"{len(self.channel.apprise_urls or [])} URL(s) set ({schemes}); write-only, "
                "never shown. Leave empty to keep them, or give the complete new list."
            )

    def data_for_service(self) -> dict[str, Any]:
        data = super().data_for_service()
        urls = [line.strip() for line in self.cleaned_data["apprise_urls"].splitlines()]
        urls = [url for url in urls if url]
        if urls or self.channel is None:
            data["apprise_urls"] = urls
        return data


CHANNEL_FORMS: dict[str, type[ChannelForm]] = {
    Channel.Kind.WEBHOOK: WebhookForm,
    Channel.Kind.EMAIL: EmailForm,
    Channel.Kind.APPRISE: AppriseForm,
}


def _choices(model: Any, everything: str) -> list[tuple[str, str]]:
    names = model.objects.order_by("name").values_list("name", flat=True)
    return [("", everything)] + [(name, name) for name in names]


class RuleForm(RefusalsMixin, forms.Form):
    """Names for channel, project and task, as the service takes them."""

    name = forms.CharField(max_length=64, help_text="letters, digits, '_', '.', '-'")
    channel = forms.CharField(widget=forms.Select, help_text="where the alerts go")
    project = forms.CharField(
        required=False, widget=forms.Select, help_text="only events about this project"
    )
    task = forms.CharField(
        required=False, widget=forms.Select, help_text="only events about this task"
    )
    event_kinds = AnyChoices(
        required=False,
        choices=list(KINDS.items()),
        widget=forms.CheckboxSelectMultiple,
        help_text="none checked: every kind",
    )
    cooldown = forms.IntegerField(
        initial=600,
        help_text="seconds after an alert during which repeats of the same trouble are folded "
        "into one digest",
    )
    quiet_start = forms.CharField(
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text="alerts due in quiet hours wait for their end",
    )
    quiet_end = forms.CharField(required=False, widget=forms.TimeInput(attrs={"type": "time"}))
    quiet_timezone = forms.CharField(
        required=False,
        initial="UTC",
        max_length=64,
        help_text="of the quiet hours, e.g. Europe/Paris; empty: UTC",
        widget=forms.TextInput(attrs={"list": "timezone-options"}),
    )
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, rule: AlertRule | None = None, **kwargs: Any) -> None:
        self.rule = rule
        if rule is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": rule.name,
                "channel": rule.channel.name,
                "project": rule.project.name if rule.project_id else "",
                "task": rule.task.name if rule.task_id else "",
                "event_kinds": list(rule.event_kinds or []),
                "cooldown": rule.cooldown,
                "quiet_start": rule.quiet_start.isoformat("minutes") if rule.quiet_start else "",
                "quiet_end": rule.quiet_end.isoformat("minutes") if rule.quiet_end else "",
                "quiet_timezone": rule.quiet_timezone,
                "enabled": rule.enabled,
            }
        super().__init__(*args, **kwargs)
        self.fields["channel"].widget.choices = _choices(Channel, "- choose a channel -")
        self.fields["project"].widget.choices = _choices(Project, "every project")
        tasks = Task.objects.select_related("project").order_by("name")
        self.fields["task"].widget.choices = [("", "every task")] + [
            (task.name, f"{task.name} ({task.project.name})") for task in tasks
        ]

    def kinds(self) -> list[dict[str, Any]]:
        """The event kinds with their descriptions and whether each is checked."""
        value = self["event_kinds"].value() or []
        return [
            {"kind": kind, "description": text, "checked": kind in value}
            for kind, text in KINDS.items()
        ]

    def data_for_service(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        for key in ("project", "task", "quiet_start", "quiet_end"):
            data[key] = data[key] or None
        data["quiet_timezone"] = data["quiet_timezone"] or "UTC"
        return data
