"""The task form: every field of a task, as text an operator can type, turned into the data
:func:`controlplane.scheduling.editing.save_task` takes.

The form only parses (numbers, ``key=value`` lines or JSON, tag lists) and offers choices; the
rules themselves (cron, timezone, spider of the version, limits, unique name) are the domain's,
so the dashboard refuses exactly what the REST API refuses. Its messages are put back beside the
fields with :func:`add_refusal`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.urls import reverse

from controlplane.deploys.models import Project, Version
from controlplane.nodes.models import Node
from controlplane.refusals import Refused
from controlplane.scheduling.editing import PLAIN_FIELDS, snapshot
from controlplane.scheduling.models import Task

ARGS_HELP = "One <code>name=value</code> per line, or a JSON object. Values are strings."
KEY_VALUE_RE = re.compile(r"^\s*([^=\s][^=]*?)\s*=(.*)$")


def parse_mapping(text: str) -> dict[str, Any]:
    """``key=value`` lines (blank lines and ``#`` comments ignored) or one JSON object."""
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith(("{", "[", '"')):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(value, dict):
            raise forms.ValidationError("JSON must be an object of name: value pairs")
        return value
    mapping: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = KEY_VALUE_RE.match(line)
        if match is None:
            raise forms.ValidationError(f"line {number}: expected name=value, got {line.strip()!r}")
        key, value = match.group(1), match.group(2).strip()
        if key in mapping:
            raise forms.ValidationError(f"line {number}: {key!r} is given twice")
        mapping[key] = value
    return mapping


def format_mapping(mapping: dict[str, Any]) -> str:
    """The inverse of :func:`parse_mapping`: lines when every value is a one-line string, so
    saving the form unchanged changes nothing; JSON otherwise (numbers stay numbers)."""
    if all(isinstance(v, str) and "\n" not in v and v == v.strip() for v in mapping.values()):
        return "\n".join(f"{k}={v}" for k, v in mapping.items())
    return json.dumps(mapping, indent=2)


def parse_tags(text: str) -> list[str]:
    return [tag for tag in re.split(r"[\s,]+", text or "") if tag]


def timezone_names() -> list[str]:
    return sorted(available_timezones())


def spider_options() -> list[tuple[str, str]]:
    """(spider, project) for each project's version runs use (current, else the newest), for
    the spider input's list. One query; the eggs stay in the database."""
    options: list[tuple[str, str]] = []
    versions = Version.objects.filter(deleted_at__isnull=True).order_by("project__name", "-number")
    newest: dict[str, list[str]] = {}
    current: dict[str, list[str]] = {}
    rows = versions.values_list("project__name", "spiders", "pk", "project__current_version")
    for name, spiders, pk, current_pk in rows:
        newest.setdefault(name, spiders or [])
        if pk == current_pk:
            current[name] = spiders or []
    for name, spiders in newest.items():
        options.extend((spider, name) for spider in sorted(current.get(name, spiders)))
    return options


def version_choices() -> list[tuple[str, Any]]:
    """ "" (the project's current version when the run starts), then each project's versions."""
    groups: dict[str, list[tuple[str, str]]] = {}
    versions = (
        Version.objects.filter(deleted_at__isnull=True)
        .select_related("project")
        .order_by("project__name", "-number")
        .only("version", "spiders", "project__name", "project__current_version")
    )
    for version in versions:
        current = " (current)" if version.project.current_version_id == version.pk else ""
        spiders = f" · {len(version.spiders)} spiders" if version.spiders else ""
        groups.setdefault(version.project.name, []).append(
            (version.version, f"{version.version}{current}{spiders}")
        )
    return [("", "not pinned: the project's current version"), *groups.items()]


class TaskForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="letters, digits, '_', '.', '-'")
    # Selects whose values the domain checks, so an unknown one gets its message.
    project = forms.CharField(widget=forms.Select)
    spider = forms.CharField(max_length=100)
    version = forms.CharField(
        required=False,
        label="Version pin",
        widget=forms.Select,
        help_text="pin a version to keep the task on it after new deploys and rollbacks",
    )
    args = forms.CharField(
        required=False,
        label="Spider arguments",
        help_text=ARGS_HELP,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
    )
    settings = forms.CharField(
        required=False,
        label="Scrapy settings",
        help_text=ARGS_HELP.replace("Values are strings.", "e.g. <code>DOWNLOAD_DELAY=0.5</code>"),
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
    )
    cron = forms.CharField(
        required=False,
        max_length=120,
        help_text="minute hour day month weekday (6 fields: seconds first), or @hourly, @daily…; "
        "empty when the task only runs after another task",
        widget=forms.TextInput(attrs={"class": "mono", "autocomplete": "off"}),
    )
    timezone = forms.CharField(
        max_length=64,
        help_text="an IANA name, e.g. Europe/Paris; the cron runs on this wall clock",
        widget=forms.TextInput(attrs={"list": "timezone-options", "autocomplete": "off"}),
    )
    after_task = forms.CharField(
        required=False,
        label="Run after task",
        widget=forms.Select,
        help_text="start a run of this task when a run of that task ends",
    )
    after_condition = forms.ChoiceField(
        required=False, label="When the upstream run", choices=Task.AfterCondition.choices
    )
    pass_upstream = forms.BooleanField(
        required=False,
        label="Pass the upstream run",
        help_text="spider arguments upstream_run, upstream_task, upstream_state, "
        "upstream_items, upstream_pages, upstream_errors",
    )
    enabled = forms.BooleanField(required=False, help_text="a disabled task does not fire")
    misfire_grace = forms.IntegerField(
        label="Misfire grace (s)", help_text="a fire later than this is recorded as missed"
    )
    selector = forms.ChoiceField(label="Run on", choices=Task.Selector.choices)
    selector_tags = forms.CharField(
        required=False,
        label="Node tags",
        help_text="with “nodes with all these tags”: tags separated by spaces or commas",
    )
    selector_nodes = forms.MultipleChoiceField(
        required=False,
        label="Nodes",
        help_text="with “these nodes”",
        widget=forms.CheckboxSelectMultiple,
    )
    fanout = forms.IntegerField(
        label="Fan-out", help_text="run a Redis-fed spider on this many nodes sharing one crawl"
    )
    priority = forms.IntegerField(
        required=False,
        label="Priority",
        help_text="-100 to 100; higher goes first when the fleet is full",
    )
    max_concurrent = forms.IntegerField(
        required=False,
        label="At most running at once",
        help_text="empty = no limit; 1 = never run this task twice at once",
    )
    max_attempts = forms.IntegerField(label="Max attempts", help_text="1 = no retry")
    retry_backoff = forms.FloatField(label="Retry backoff (s)", help_text="before the 1st retry")
    retry_backoff_factor = forms.FloatField(
        label="Backoff factor", help_text="each further retry waits this many times longer"
    )
    max_runtime = forms.IntegerField(
        required=False,
        label="Max runtime (s)",
        help_text="longer jobs are cancelled as timed out; empty = no limit",
    )
    error_threshold = forms.IntegerField(
        label="Error threshold", help_text="more ERROR log lines than this make a job failed"
    )
    overlap = forms.ChoiceField(
        label="If the previous run is still going", choices=Task.Overlap.choices
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fields = self.fields
        fields["project"].widget.choices = [("", "choose a project")] + [
            (name, name) for name in Project.objects.values_list("name", flat=True)
        ]
        fields["version"].widget.choices = version_choices()
        fields["after_task"].widget.choices = [("", "none: only its own schedule")] + [
            (name, name) for name in Task.objects.values_list("name", flat=True)
        ]
        fields["selector_nodes"].choices = [
            (name, name) for name in Node.objects.values_list("name", flat=True)
        ]
        fields["spider"].widget.attrs.update(list="spider-options", autocomplete="off")
        # Cron and timezone ask for a preview of the next fires as the operator types.
        preview = {
            "hx-get": reverse("dashboard:task_cron_preview"),
            "hx-trigger": "keyup changed delay:300ms, change",
            "hx-target": "#cron-preview",
            "hx-swap": "outerHTML",
            "hx-include": "[name=cron], [name=timezone]",
            "hx-sync": "closest form:replace",
        }
        fields["cron"].widget.attrs.update(preview)
        fields["timezone"].widget.attrs.update(preview)

    def clean_args(self) -> dict[str, Any]:
        return parse_mapping(self.cleaned_data.get("args", ""))

    def clean_settings(self) -> dict[str, Any]:
        return parse_mapping(self.cleaned_data.get("settings", ""))

    def clean_priority(self) -> int:
        value = self.cleaned_data.get("priority")
        return 0 if value is None else value

    def clean_selector_tags(self) -> list[str]:
        return parse_tags(self.cleaned_data.get("selector_tags", ""))

    def task_data(self) -> dict[str, Any]:
        """The fields that parsed, as ``save_task`` takes them (every field: a full replace)."""
        data = {key: value for key, value in self.cleaned_data.items() if key in self.fields}
        data["version"] = data.get("version") or None
        data["after_task"] = data.get("after_task") or None
        data["after_condition"] = data.get("after_condition") or Task.AfterCondition.SUCCESS
        return data


def initial_for(task: Task) -> dict[str, Any]:
    """The form's starting values: the task's (names for related rows), or the model defaults."""
    if task.pk:
        values = snapshot(task)
    else:
        values = {key: getattr(task, key) for key in PLAIN_FIELDS}
        values.update(project="", version="", selector_nodes=[])
        if Project.objects.count() == 1:
            values["project"] = Project.objects.values_list("name", flat=True).first()
    values["args"] = format_mapping(values["args"])
    values["settings"] = format_mapping(values["settings"])
    values["selector_tags"] = ", ".join(values["selector_tags"])
    for key in ("retry_backoff", "retry_backoff_factor"):
        values[key] = f"{values[key]:g}"  # 30, not 30.0
    values["version"] = values["version"] or ""
    values["after_task"] = values.get("after_task") or ""
    return values


def add_refusal(form: TaskForm, exc: Refused) -> None:
    """Put the domain's messages beside the fields they are about (the rest above the form),
    skipping fields that already show the form's own message."""
    for key, messages in exc.fields.items():
        field = key if key in form.fields else None
        if field is not None and field in form.errors:
            continue
        for message in messages:
            form.add_error(field, message if field or key == "__all__" else f"{key}: {message}")
    if not exc.fields:
        form.add_error(None, exc.message)
