"""schedule.json's own parameters, read without the database: priority, settings, job id, args.

Kept apart from the endpoint so the rules can be fuzzed on their own: every input is either a
valid ``ScheduleOptions`` or a ``ScrapydRefusal`` that says which parameter is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from controlplane.jobs.models import MAX_PRIORITY, MIN_PRIORITY
from controlplane.scrapydapi.responses import ScrapydRefusal
from controlplane.validators import validate_spider_args, validate_spider_settings

JOB_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True)
class ScheduleOptions:
    priority: float
    settings: dict[str, str]
    args: dict[str, str]
    job_id: str | None


def read_schedule_options(
    priority_text: str, setting_pairs: list[str], args: dict[str, str], job_id: str | None
) -> ScheduleOptions:
    """Scrapyd's parameters as crawlfleet takes them; ``ScrapydRefusal`` names the bad one."""
    try:
        priority = float(priority_text)
    except ValueError:
        raise ScrapydRefusal(f"priority is invalid: {priority_text!r} is not a number") from None
    if not math.isfinite(priority) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ScrapydRefusal(
            f"priority is invalid: {priority_text!r} is not from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    bad = [pair for pair in setting_pairs if "=" not in pair]
    if bad:
        raise ScrapydRefusal(f"setting is invalid: {bad[0]!r} is not NAME=VALUE")
    settings = dict(pair.split("=", 1) for pair in setting_pairs)
    for check, value in ((validate_spider_settings, settings), (validate_spider_args, args)):
        try:
            check(value)
        except ValidationError as exc:
            raise ScrapydRefusal(" ".join(exc.messages)) from None
    if job_id is not None and not JOB_ID_RE.match(job_id):
        raise ScrapydRefusal("jobid is invalid: letters, digits, '_', '.', '-', up to 64")
    return ScheduleOptions(priority, settings, args, job_id)
