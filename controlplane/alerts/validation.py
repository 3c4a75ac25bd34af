"""The rules of channels and alert rules: every problem at once, keyed by field, before anything
is stored. Messages never repeat a secret (an apprise URL is named by its position only)."""

from __future__ import annotations

from datetime import time
from typing import Any

from django.core.exceptions import ValidationError

from controlplane.alerts.models import AlertRule, Channel
from controlplane.alerts.quiet import zone
from controlplane.deploys.models import Project
from controlplane.events import KINDS
from controlplane.refusals import Refused, summary
from controlplane.scheduling.models import Task
from controlplane.validators import validate_email_list, validate_name, validate_webhook_url

CHANNEL_FIELDS = ("name", "kind", "url", "recipients", "secret", "apprise_urls", "enabled")
CHANNEL_SECRETS = ("secret", "apprise_urls")
RULE_FIELDS = ("name", "channel", "event_kinds", "project", "task", "cooldown")
RULE_FIELDS += ("quiet_start", "quiet_end", "quiet_timezone", "enabled")
MAX_COOLDOWN = 7 * 24 * 3600
MIN_SECRET = 16
MAX_APPRISE_URLS = 20


def refuse(errors: dict[str, list[str]], *, status: int = 422) -> None:
    if errors:
        code = "conflict" if status == 409 else "invalid"
        raise Refused(summary(errors), code=code, status=status, fields=errors)


def check_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    refuse({key: ["not a field of this object"] for key in unknown})


def _messages(check: Any, value: Any) -> list[str]:
    try:
        check(value)
    except ValidationError as exc:
        return list(exc.messages)
    return []


def apprise_problems(urls: Any) -> list[str]:
    """Why apprise cannot take ``urls`` (empty when it can)."""
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        return ["give a list of one or more apprise URLs"]
    if len(urls) > MAX_APPRISE_URLS:
        return [f"at most {MAX_APPRISE_URLS} URLs"]
    import apprise

    problems = []
    for position, url in enumerate(urls, start=1):
        scheme = url.partition("://")[0].lower() if "://" in url else ""
        if not apprise.Apprise().add(url):
            named = f"scheme {scheme!r}" if scheme and len(scheme) <= 20 else "URL"
            problems.append(f"URL {position}: apprise does not know this {named} or its form")
    return problems


def validate_channel(channel: Channel) -> None:
    """All of ``channel``'s problems at once (409 when the only one is a taken name)."""
    errors: dict[str, list[str]] = {}
    if problems := _messages(validate_name, channel.name):
        errors["name"] = problems
    if channel.kind not in Channel.Kind.values:
        errors["kind"] = [f"must be one of {', '.join(Channel.Kind.values)}"]
    if channel.kind == Channel.Kind.WEBHOOK:
        if problems := _messages(validate_webhook_url, channel.url):
            errors["url"] = problems
        if channel.secret and len(channel.secret) < MIN_SECRET:
            errors["secret"] = [f"a signing secret has at least {MIN_SECRET} characters"]
    elif channel.kind == Channel.Kind.EMAIL:
        if problems := _messages(validate_email_list, channel.recipients):
            errors["recipients"] = problems
    elif channel.kind == Channel.Kind.APPRISE and (
        problems := apprise_problems(channel.apprise_urls)
    ):
        errors["apprise_urls"] = problems
    for name, value, kinds in (
        ("url", channel.url, {Channel.Kind.WEBHOOK}),
        ("recipients", channel.recipients, {Channel.Kind.EMAIL}),
        ("apprise_urls", channel.apprise_urls, {Channel.Kind.APPRISE}),
        ("secret", channel.secret, {Channel.Kind.WEBHOOK}),
    ):
        if value and channel.kind in Channel.Kind.values and channel.kind not in kinds:
            errors.setdefault(name, []).append(f"not used by a {channel.kind} channel")
    if not isinstance(channel.enabled, bool):
        errors["enabled"] = ["must be true or false"]
    others = Channel.objects.exclude(pk=channel.pk) if channel.pk else Channel.objects.all()
    if not errors and others.filter(name=channel.name).exists():
        refuse({"name": [f"a channel named {channel.name!r} exists"]}, status=409)
    refuse(errors)


def _time(value: Any, errors: dict[str, list[str]], name: str) -> time | None:
    if value is None or value == "" or isinstance(value, time):
        return value or None
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        errors[name] = ["a local time like 22:00"]
        return None


def resolve_rule(rule: AlertRule, data: dict[str, Any]) -> None:
    """Apply ``data`` (names for channel, project and task) to ``rule`` and validate it all."""
    check_fields(data, RULE_FIELDS)
    errors: dict[str, list[str]] = {}
    nulls = [k for k in ("name", "channel", "event_kinds", "cooldown", "enabled") if k in data]
    for key in nulls:
        if data[key] is None:
            errors[key] = ["cannot be null"]
    refuse(errors)
    for key in ("name", "event_kinds", "cooldown", "quiet_timezone", "enabled"):
        if key in data:
            setattr(rule, key, data[key])
    if "channel" in data:
        channel = Channel.objects.filter(name=data["channel"]).first()
        if channel is None:
            errors["channel"] = [f"no channel named {data['channel']!r}"]
        else:
            rule.channel = channel
    elif rule.channel_id is None:
        errors["channel"] = ["required"]
    for key, model in (("project", Project), ("task", Task)):
        if key in data:
            value = data[key]
            found = model.objects.filter(name=value).first() if value else None
            if value and found is None:
                errors[key] = [f"no {key} named {value!r}"]
            setattr(rule, key, found)
    for key in ("quiet_start", "quiet_end"):
        if key in data:
            setattr(rule, key, _time(data[key], errors, key))
    if problems := _messages(validate_name, rule.name):
        errors["name"] = problems
    kinds = rule.event_kinds
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        errors["event_kinds"] = ["a list of event kinds (empty: every kind)"]
    elif unknown := sorted(set(kinds) - set(KINDS)):
        errors["event_kinds"] = [
            f"unknown event kind(s) {', '.join(map(repr, unknown))}; known: {', '.join(KINDS)}"
        ]
    else:
        rule.event_kinds = sorted(set(kinds))
    cooldown = rule.cooldown
    if isinstance(cooldown, bool) or not isinstance(cooldown, int):
        errors["cooldown"] = ["whole seconds"]
    elif not 0 <= cooldown <= MAX_COOLDOWN:
        errors["cooldown"] = [f"between 0 and {MAX_COOLDOWN} seconds (7 days)"]
    if not isinstance(rule.quiet_timezone, str) or zone(rule.quiet_timezone) is None:
        errors["quiet_timezone"] = [f"unknown timezone {rule.quiet_timezone!r}"]
    if "quiet_start" not in errors and "quiet_end" not in errors:
        if (rule.quiet_start is None) != (rule.quiet_end is None):
            errors["quiet_end" if rule.quiet_end is None else "quiet_start"] = [
                "give both the start and the end of quiet hours, or neither"
            ]
        elif rule.quiet_start is not None and rule.quiet_start == rule.quiet_end:
            errors["quiet_end"] = ["quiet hours end when they start: leave both empty instead"]
    if (
        rule.task is not None
        and rule.project is not None
        and rule.task.project_id != rule.project.pk
    ):
        errors["task"] = [f"task {rule.task.name!r} is not in project {rule.project.name!r}"]
    if not isinstance(rule.enabled, bool):
        errors["enabled"] = ["must be true or false"]
    others = AlertRule.objects.exclude(pk=rule.pk) if rule.pk else AlertRule.objects.all()
    if not errors and others.filter(name=rule.name).exists():
        refuse({"name": [f"a rule named {rule.name!r} exists"]}, status=409)
    refuse(errors)
