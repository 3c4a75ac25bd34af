"""The monitor rule form: a kind, its parameters, the outcome and whether it is on, as typed by an
operator, turned into the data :func:`controlplane.monitors.services.save_rule` takes.

One form holds every kind's parameter inputs; each input says which kinds use it
(``data-kinds``) so ``monitors.js`` shows only the chosen kind's, and only those are read and
sent. The form parses text into numbers and lists; whether a number is in range, a status code
known or a field name valid is the domain's to say, so the dashboard refuses exactly what the
REST API refuses. Its messages come back beside the inputs through :func:`add_refusal`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django import forms

from controlplane.monitors import rules
from controlplane.monitors.models import MonitorRule
from controlplane.refusals import Refused

# The parameters each kind takes, in the order the form shows them (tests/unit checks this
# against controlplane.monitors.rules, so a new kind or parameter cannot be missed here).
PARAMETERS: dict[str, tuple[str, ...]] = {
    "min_items": ("count",),
    "min_pages": ("count",),
    "max_errors": ("count",),
    "max_warnings": ("count",),
    "finish_reasons": ("reasons",),
    "status_share": ("status", "percent"),
    "max_runtime": ("seconds",),
    "field_coverage": ("field", "percent"),
    "history": ("metric", "percent", "runs"),
    "stall": ("seconds",),
}
PARAMETER_NAMES = ("count", "reasons", "status", "field", "metric", "percent", "seconds", "runs")


def _whole(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,15}", text):
        raise forms.ValidationError("enter a whole number")
    return int(text)


def _number(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise forms.ValidationError("enter a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise forms.ValidationError("enter a number")
    return int(value) if value.is_integer() else value


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", text) if word]


PARSERS: dict[str, Callable[[str], Any]] = {
    "count": _whole,
    "reasons": _words,
    "status": _whole,
    "field": str,
    "metric": str,
    "percent": _number,
    "seconds": _whole,
    "runs": _whole,
}


def _input(label: str, help_text: str, **attrs: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=200,
        help_text=help_text,
        widget=forms.TextInput(attrs={"autocomplete": "off", **attrs}),
    )


def kinds_using(name: str) -> str:
    return " ".join(kind for kind, names in PARAMETERS.items() if name in names)


class RuleForm(forms.Form):
    """A new rule (``kind=None``: the kind is chosen) or an existing one of ``kind``."""

    kind = forms.CharField(label="Kind", widget=forms.Select)
    count = _input("Count", "items, pages or log lines", inputmode="numeric")
    reasons = _input(
        "Finish reasons",
        "the accepted ones, separated by commas, e.g. finished",
        spellcheck="false",
    )
    status = _input("HTTP status", "e.g. 403 or 429", inputmode="numeric")
    field = _input("Item field", "e.g. price", spellcheck="false")
    metric = forms.CharField(
        label="Compare",
        required=False,
        widget=forms.Select(choices=[("items", "items"), ("pages", "pages")]),
    )
    percent = _input("Percent", "0 to 100", inputmode="decimal")
    seconds = _input("Seconds", "", inputmode="numeric")
    runs = _input("Last runs", "how many earlier successful runs; empty = 10", inputmode="numeric")
    # A select of the domain's values (short labels: the help says what each means); a value
    # not among them is refused by the domain, beside the select.
    outcome = forms.CharField(
        label="When broken",
        widget=forms.Select(
            choices=[
                (MonitorRule.Outcome.DEGRADED, "degraded"),
                (MonitorRule.Outcome.FAILED, "failed"),
            ]
        ),
        initial=MonitorRule.Outcome.DEGRADED,
        help_text="failed: retried like other failures; degraded: not retried, someone looks",
    )
    enabled = forms.BooleanField(
        required=False, initial=True, help_text="a switched-off rule judges nothing"
    )

    def __init__(self, *args: Any, kind: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_monitor_%s")  # unique beside a page's other forms
        super().__init__(*args, **kwargs)
        self.fixed_kind = kind
        if kind is not None:
            del self.fields["kind"]
        else:
            self.fields["kind"].widget.choices = [
                (name, f"{name}: {spec.label}") for name, spec in rules.KINDS.items()
            ]
            self.fields["kind"].widget.attrs["data-monitor-kind"] = ""
        for name in PARAMETER_NAMES:
            used_by = kinds_using(name)
            if kind is not None and kind not in used_by.split():
                del self.fields[name]
            else:
                self.fields[name].kinds = used_by  # type: ignore[attr-defined]
        seconds = self.fields.get("seconds")
        if seconds is not None:
            seconds.help_text = "max_runtime: at least 1; stall: at least 5"

    @property
    def kind_value(self) -> str:
        if self.fixed_kind is not None:
            return self.fixed_kind
        return str((self.data if self.is_bound else self.initial).get("kind", "") or "")

    def parameter_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in PARAMETER_NAMES if name in self.fields]

    def clean(self) -> dict[str, Any]:
        """Parse only the chosen kind's parameters (the other inputs are hidden and ignored)."""
        data = super().clean()
        params: dict[str, Any] = {}
        for name in PARAMETERS.get(self.fixed_kind or data.get("kind", ""), ()):
            raw = str(data.get(name) or "").strip()
            if not raw:
                continue  # the domain names what is missing
            try:
                params[name] = PARSERS[name](raw)
            except forms.ValidationError as exc:
                self.add_error(name, exc)
        data["params"] = params
        return data

    def rule_data(self) -> dict[str, Any]:
        """What parsed, as ``save_rule`` takes it (the kind only for a new rule)."""
        data = self.cleaned_data
        found: dict[str, Any] = {"params": data.get("params", {}), "enabled": data["enabled"]}
        if "outcome" in data:
            found["outcome"] = data["outcome"]
        if self.fixed_kind is None and "kind" in data:
            found["kind"] = data["kind"]
        return found


def initial_for(rule: MonitorRule | None) -> dict[str, Any]:
    """The form's starting values: a rule's (an existing one, or a default to override)."""
    if rule is None:
        return {"kind": "min_items", "outcome": MonitorRule.Outcome.DEGRADED, "enabled": True}
    values: dict[str, Any] = {"kind": rule.kind, "outcome": rule.outcome, "enabled": rule.enabled}
    for name, value in rule.params.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, float):
            value = f"{value:g}"  # 90, not 90.0
        values[name] = value
    return values


def add_refusal(form: RuleForm, exc: Refused) -> None:
    """The domain's messages beside the inputs they are about (``params.percent`` beside
    Percent), the rest above the form; inputs that show the form's own message are skipped."""
    for key, messages in exc.fields.items():
        name = key.removeprefix("params.")
        field = name if name in form.fields and key != "params" else None
        if field is not None and field in form.errors:
            continue
        for message in messages:
            form.add_error(field, message if field or key == "__all__" else f"{key}: {message}")
    if not exc.fields:
        form.add_error(None, exc.message)
