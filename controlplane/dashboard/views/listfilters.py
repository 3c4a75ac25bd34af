"""The filter bars of the job and run lists: Django forms read from the query string.

A valid form becomes the domain's :class:`~controlplane.jobs.listing.JobFilters` or
:class:`~controlplane.jobs.listing.RunFilters`; an invalid one is shown with its errors beside
the fields (and the list is not queried). Times are read in the control plane's time zone.
"""

from __future__ import annotations

from django import forms

from controlplane.jobs.listing import JobFilters, RunFilters
from controlplane.jobs.models import Job
from controlplane.scheduling.models import TaskRun

TIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
ACTIVE_JOB_STATES = [str(s) for s in Job.ACTIVE]
FAILED_JOB_STATES = [str(s) for s in Job.RETRYABLE]


def _time_field(label: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        input_formats=TIME_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )


class _TimeRangeForm(forms.Form):
    """From: at or after; To: before (jobs by creation time, runs by scheduled time)."""

    since = _time_field("From (UTC)")
    until = _time_field("To (UTC)")

    def clean(self) -> dict:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and until <= since:
            self.add_error("until", "must be later than From")
        return data


def _text(label: str, datalist: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"list": datalist, "autocomplete": "off"}),
    )


class JobFilterForm(_TimeRangeForm):
    task = _text("Task", "task-names")
    spider = _text("Spider", "spider-names")
    node = _text("Node", "node-names")
    state = forms.MultipleChoiceField(
        label="State",
        required=False,
        choices=[(value, value.replace("_", " ")) for value in Job.State.values],
        widget=forms.CheckboxSelectMultiple,
    )
    field_order = ["task", "spider", "node", "since", "until", "state"]

    def filters(self) -> JobFilters:
        data = self.cleaned_data
        return JobFilters(
            states=list(data["state"]),
            task=data["task"].strip(),
            spider=data["spider"].strip(),
            node=data["node"].strip(),
            created_from=data["since"],
            created_to=data["until"],
        )


class RunFilterForm(_TimeRangeForm):
    task = _text("Task", "task-names")
    trigger = forms.ChoiceField(
        label="Trigger", required=False, choices=[("", "any"), *TaskRun.Trigger.choices]
    )
    state = forms.MultipleChoiceField(
        label="State",
        required=False,
        choices=[(value, value) for value in TaskRun.State.values],
        widget=forms.CheckboxSelectMultiple,
    )
    field_order = ["task", "trigger", "since", "until", "state"]

    def filters(self) -> RunFilters:
        data = self.cleaned_data
        return RunFilters(
            states=list(data["state"]),
            task=data["task"].strip(),
            trigger=data["trigger"],
            scheduled_from=data["since"],
            scheduled_to=data["until"],
        )
