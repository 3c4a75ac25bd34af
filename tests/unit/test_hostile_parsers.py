"""Parsers of outside input, fuzzed: each answers a valid result or a clear refusal, nothing else.

Cron expressions (and the fire times they give), spider arguments and settings, and the
Scrapyd schedule.json parameters. Seeded (``derandomize``) and bounded, so CI is reproducible
and fast; a case that once failed is kept as an ``@example``.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controlplane.scheduling import cron
from controlplane.scrapydapi.responses import ScrapydRefusal
from controlplane.scrapydapi.scheduleparams import ScheduleOptions, read_schedule_options
from controlplane.validators import (
    validate_name,
    validate_spider_args,
    validate_spider_settings,
    validate_version,
)


def attempt(call: Any, *args: Any, refusal: type[Exception] = ValidationError) -> Any:
    """``call(*args)``'s result, or the refusal it raised; any other exception fails the test."""
    try:
        return call(*args)
    except refusal as exc:
        return exc


def messages(refused: Exception) -> list[str]:
    return list(getattr(refused, "messages", None) or [getattr(refused, "message", "")])


NAME_CHARS = string.ascii_letters + string.digits + "_.-"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

ATOMS = st.sampled_from(
    [
        "*",
        "?",
        "0",
        "1",
        "5",
        "7",
        "12",
        "23",
        "31",
        "59",
        "60",
        "99",
        "L",
        "W",
        "#",
        "last",
        "mon",
        "sun",
        "sat",
        "jan",
        "feb",
        "dec",
        "xyz",
        "-",
        "/",
        ",",
        "1-5",
        "5-1",
        "*/0",
        "*/15",
        "0/7",
        "mon-fri",
        "sat-sun",
        "1#2",
        "5L",
        "lastday",
        "-1",
        "0x1",
        "٣",
        "½",
        "\x00",
        " ",
    ]
)
FIELD = st.lists(ATOMS, min_size=1, max_size=4).map("".join)
EXPRESSION = st.one_of(
    st.lists(FIELD, min_size=4, max_size=7).map(" ".join),
    st.sampled_from(["@daily", "@hourly", "@weekly", "@reboot", "@", "", " "]),
    st.text(max_size=40),
)
TIMEZONE = st.one_of(
    st.sampled_from(
        [
            "UTC",
            "Europe/Paris",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Nowhere/City",
            "../../etc/passwd",
            "",
            "utc",
        ]
    ),
    st.text(max_size=20),
)
AFTER = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)


@FUZZ
@given(EXPRESSION, TIMEZONE, AFTER)
@example("0 0 31 2 *", "UTC", datetime(2025, 1, 1, tzinfo=UTC))  # never fires
@example("0 2 * * *", "Europe/Paris", datetime(2025, 3, 30, tzinfo=UTC))  # a skipped hour
@example("* * * * *", "\x00", datetime(2025, 1, 1, tzinfo=UTC))  # NUL in a zone name
@example("0 0 29 2 1", "UTC", datetime(8999, 12, 31, tzinfo=UTC))  # near the end of time
def test_cron_parses_or_refuses_and_fire_times_follow(expression, timezone, after):
    trigger = attempt(cron.parse, expression, timezone)
    if isinstance(trigger, ValidationError):
        assert all(messages(trigger))
        return
    times = cron.next_fire_times(trigger, after, 3)
    assert all(t.astimezone(UTC) > after for t in times)
    assert times == sorted(times, key=lambda t: t.astimezone(UTC))


NAMES = st.one_of(
    st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z"), st.text(max_size=12), st.integers()
)
VALUES = st.one_of(
    st.text(max_size=60),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
MAPPINGS = st.one_of(
    st.dictionaries(NAMES, VALUES, max_size=6), st.lists(st.text()), st.text(), st.none()
)


@FUZZ
@given(MAPPINGS)
@example({"url": "a\x00b"})  # PostgreSQL cannot store NUL in JSON
@example({"pages": 10**5000})  # too many digits for str()
@example({"_job": "x", "project": "p"})
@example({"name\n": "x"})  # "$" matched before a trailing newline
def test_spider_args_and_settings_validate_or_refuse(value):
    for validate in (validate_spider_args, validate_spider_settings):
        refused = attempt(validate, value)
        if isinstance(refused, ValidationError):
            assert all(messages(refused))
        else:
            assert isinstance(value, dict)
            assert all(isinstance(k, str) and k.isidentifier() and k.isascii() for k in value)
            assert all("\x00" not in item for item in value.values() if isinstance(item, str))


@FUZZ
@given(st.text(max_size=70))
@example("crawler\n")  # "$" matched before a trailing newline
@example("100\n")
def test_names_and_versions_validate_or_refuse(text):
    for validate, allowed in ((validate_name, NAME_CHARS), (validate_version, string.digits)):
        refused = attempt(validate, text)
        if isinstance(refused, ValidationError):
            assert all(messages(refused))
        else:
            assert text
            assert set(text) <= set(allowed)


PRIORITY = st.one_of(
    st.sampled_from(
        [
            "0",
            "-100",
            "100",
            "100.0000001",
            "nan",
            "inf",
            "-inf",
            "1e999",
            "1_0",
            " 5 ",
            "0x10",
            "",
            "٣",
        ]
    ),
    st.floats().map(str),
    st.text(max_size=10),
)
SETTING = st.one_of(st.from_regex(r"\A[A-Z_]{1,10}=[a-z0-9]{0,5}\Z"), st.text(max_size=15))
JOB_ID = st.one_of(st.none(), st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z"), st.text(max_size=70))


@FUZZ
@given(
    PRIORITY,
    st.lists(SETTING, max_size=4),
    st.dictionaries(NAMES, st.text(max_size=20), max_size=4),
    JOB_ID,
)
@example("nan", [], {}, None)
@example("1e999", [], {}, None)
@example("0", ["=x"], {}, None)
@example("0", [], {"arg": "a\x00"}, None)
def test_scrapyd_schedule_parameters_read_or_refuse(priority, setting_pairs, args, job_id):
    options = attempt(
        read_schedule_options, priority, setting_pairs, args, job_id, refusal=ScrapydRefusal
    )
    if isinstance(options, ScrapydRefusal):
        assert all(messages(options))
        return
    assert isinstance(options, ScheduleOptions)
    assert -100 <= options.priority <= 100
