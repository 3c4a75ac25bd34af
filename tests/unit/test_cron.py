"""Cron expressions: readable validation errors, crontab semantics, timezones and clock changes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from controlplane.scheduling import cron
from controlplane.scheduling.models import Task

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def upcoming(expression: str, after: datetime, count: int = 5, tz: str = "UTC") -> list[datetime]:
    return cron.next_fire_times(cron.parse(expression, tz), after, count)


def weekdays(expression: str, count: int = 7) -> list[str]:
    # 2025-03-28 is a Friday.
    return [t.strftime("%a") for t in upcoming(expression, utc(2025, 3, 28), count)]


# --- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("* * *", "UTC", "has 3 fields; expected 5 (minute hour day month weekday) or 6"),
        ("* * * * * * *", "UTC", "has 7 fields"),
        ("", "UTC", "has 0 fields"),
        ("61 * * * *", "UTC", "minute (0-59) field '61': the last value (61) is higher"),
        ("0 24 * * *", "UTC", "hour (0-23) field '24'"),
        ("0 0 32 * *", "UTC", "day of month (1-31) field '32'"),
        ("0 0 * 13 *", "UTC", "month (1-12 or jan-dec) field '13'"),
        ("60 0 0 * * *", "UTC", "second (0-59) field '60'"),
        ("*/0 * * * *", "UTC", "field '*/0': Increment must be higher than 0"),
        ("a * * * *", "UTC", "minute (0-59) field 'a'"),
        ("0 0 * * 8", "UTC", "weekday 8 is out of range (0-7, Sunday is 0 or 7)"),
        ("0 0 * * funday", "UTC", "weekday 'funday' is not a day, range or step"),
        ("0 0 * * fri-mon", "UTC", "weekday range 'fri-mon' runs backwards"),
        ("0 0 * * xyz", "UTC", "unknown weekday 'xyz'"),
        ("0 0 * * *;rm", "UTC", "field '*;rm' contains invalid characters"),
        ("@often", "UTC", "unknown cron macro '@often'; known: @annually, @daily"),
        ("0 0 31 2 *", "UTC", "never fires"),
        ("0 0 * * *", "Mars/Olympus_Mons", "unknown timezone 'Mars/Olympus_Mons'"),
        ("0 0 * * *", "", "unknown timezone ''"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, timezone: str, message: str):
    with pytest.raises(ValidationError) as caught:
        cron.parse(expression, timezone)
    assert message in caught.value.messages[0]


def test_task_clean_puts_each_error_on_its_field():
    with pytest.raises(ValidationError) as caught:
        Task(name="t", spider="s", cron="0 25 * * *", timezone="UTC").clean()
    assert "hour (0-23) field '25'" in caught.value.message_dict["cron"][0]
    with pytest.raises(ValidationError) as caught:
        Task(name="t", spider="s", cron="0 5 * * *", timezone="Nowhere/City").clean()
    assert "unknown timezone" in caught.value.message_dict["timezone"][0]


# --- semantics ---------------------------------------------------------------------------------------
def test_five_fields_fire_on_the_minute_and_six_fields_take_seconds_first():
    assert upcoming("*/15 * * * *", utc(2025, 1, 1, 10, 7, 30), 3) == [
        utc(2025, 1, 1, 10, 15),
        utc(2025, 1, 1, 10, 30),
        utc(2025, 1, 1, 10, 45),
    ]
    assert upcoming("*/20 * * * * *", utc(2025, 1, 1, 10, 7, 30), 3) == [
        utc(2025, 1, 1, 10, 7, 40),
        utc(2025, 1, 1, 10, 8, 0),
        utc(2025, 1, 1, 10, 8, 20),
    ]


def test_next_runs_are_strictly_after_the_given_instant():
    assert upcoming("0 12 * * *", utc(2025, 1, 1, 12, 0), 2) == [
        utc(2025, 1, 2, 12),
        utc(2025, 1, 3, 12),
    ]


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@hourly", [utc(2025, 3, 28, 1), utc(2025, 3, 28, 2)]),
        ("@daily", [utc(2025, 3, 29), utc(2025, 3, 30)]),
        ("@midnight", [utc(2025, 3, 29), utc(2025, 3, 30)]),
        ("@weekly", [utc(2025, 3, 30), utc(2025, 4, 6)]),  # Sundays
        ("@monthly", [utc(2025, 4, 1), utc(2025, 5, 1)]),
        ("@YEARLY", [utc(2026, 1, 1), utc(2027, 1, 1)]),
    ],
)
def test_macros(macro: str, expected: list[datetime]):
    assert upcoming(macro, utc(2025, 3, 28, 0, 30), 2) == expected


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("5-7", ["Fri", "Sat", "Sun"]),
        ("sat-sun", ["Sat", "Sun"]),
        ("*/2", ["Sun", "Tue", "Thu", "Sat"]),  # crontab counts from Sunday = 0
        ("1/2", ["Mon", "Wed", "Fri"]),
        ("0-7", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
        ("1,3,SUN", ["Mon", "Wed", "Sun"]),
    ],
)
def test_weekdays_use_crontab_numbering(field: str, days: list[str]):
    found = weekdays(f"0 0 * * {field}", 14)
    assert sorted(set(found), key=found.index) == sorted(days, key=found.index)
    assert set(found) == set(days)


def test_day_of_month_and_weekday_both_set_means_either():
    # crontab: "the 1st, and every Monday"
    assert upcoming("0 0 1 * mon", utc(2025, 3, 28), 3) == [
        utc(2025, 3, 31),  # Monday
        utc(2025, 4, 1),  # the 1st (a Tuesday)
        utc(2025, 4, 7),
    ]
    # With either field a wildcard the other one alone decides.
    assert upcoming("0 0 * * mon", utc(2025, 3, 28), 1) == [utc(2025, 3, 31)]
    assert upcoming("0 0 13 * ?", utc(2025, 3, 28), 1) == [utc(2025, 4, 13)]


def test_timezone_follows_the_local_clock_across_seasons():
    times = upcoming("0 9 * * *", utc(2025, 3, 28), 4, tz="Europe/Paris")
    assert [t.astimezone(UTC).hour for t in times] == [8, 8, 7, 7]  # CET, then CEST
    assert all(t.astimezone(PARIS).hour == 9 for t in times)


def test_task_next_runs_preview():
    task = Task(name="t", spider="s", cron="30 6 * * 1-5", timezone="America/New_York")
    preview = task.next_runs(3, after=utc(2025, 3, 28, 12))
    assert [t.astimezone(NEW_YORK).strftime("%a %H:%M") for t in preview] == [
        "Mon 06:30",
        "Tue 06:30",
        "Wed 06:30",
    ]


# --- clock changes ---------------------------------------------------------------------------------
def local(times: list[datetime], tz: ZoneInfo) -> list[str]:
    return [t.astimezone(tz).isoformat() for t in times]


def test_spring_forward_fixed_hour_runs_once_right_after_the_change():
    # Europe/Paris 2025-03-30: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
    times = cron.fire_times_between(
        cron.parse("30 2 * * *", "Europe/Paris"), utc(2025, 3, 28, 12), utc(2025, 4, 1)
    )
    assert local(times, PARIS) == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]


def test_spring_forward_wildcard_hour_skips_times_that_do_not_exist():
    times = cron.fire_times_between(
        cron.parse("*/30 * * * *", "Europe/Paris"), utc(2025, 3, 30, 0, 15), utc(2025, 3, 30, 2)
    )
    assert local(times, PARIS) == [
        "2025-03-30T01:30:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-30T03:30:00+02:00",
        "2025-03-30T04:00:00+02:00",
    ]


def test_fall_back_fixed_hour_runs_once_and_wildcard_hour_runs_both_times():
    # Europe/Paris 2025-10-26: 03:00 CEST goes back to 02:00 CET; 02:xx happens twice.
    fixed = cron.fire_times_between(
        cron.parse("30 2 * * *", "Europe/Paris"), utc(2025, 10, 25), utc(2025, 10, 27, 12)
    )
    assert local(fixed, PARIS) == [
        "2025-10-25T02:30:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-27T02:30:00+01:00",
    ]
    wildcard = cron.fire_times_between(
        cron.parse("*/30 * * * *", "Europe/Paris"), utc(2025, 10, 25, 23, 45), utc(2025, 10, 26, 2)
    )
    assert local(wildcard, PARIS) == [
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]


def test_per_second_task_with_a_fixed_hour_skips_the_repeated_hour_in_one_step():
    trigger = cron.parse("* * 2 * * *", "Europe/Paris")
    # Just before the clock goes back, the next fire is the next morning's 02:00:00.
    fire = trigger.get_next_fire_time(None, datetime(2025, 10, 26, 2, 59, 59, tzinfo=PARIS))
    after = trigger.get_next_fire_time(fire, fire)
    assert fire.astimezone(PARIS).isoformat() == "2025-10-26T02:59:59+02:00"
    assert after.astimezone(PARIS).isoformat() == "2025-10-27T02:00:00+01:00"


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expression", ["*/30 * * * *", "15 1,2,3 * * *", "0 * * * *"])
def test_fire_times_always_increase_across_a_year_of_clock_changes(zone: str, expression: str):
    """APScheduler's own CronTrigger can return the same instant again around a fall-back,
    which would spin its scheduler loop; ours never goes backwards or repeats."""
    trigger = cron.parse(expression, zone)
    times = cron.fire_times_between(trigger, utc(2025, 1, 1), utc(2026, 1, 1), limit=20000)
    instants = [t.astimezone(UTC) for t in times]
    assert instants == sorted(set(instants))
    # And the scheduler's own way of asking (previous fire, now) agrees.
    previous = None
    for expected in times[:2000]:
        fire = trigger.get_next_fire_time(previous, expected)
        assert fire is not None
        assert fire.astimezone(UTC) == expected.astimezone(UTC)
        previous = fire


def test_newest_fire_times_looks_back_without_walking_a_long_window():
    trigger = cron.parse("* * * * * *")
    end = utc(2025, 6, 1, 12)
    started = time.monotonic()
    newest = cron.newest_fire_times(trigger, end - timedelta(days=30), end, 5)
    assert time.monotonic() - started < 1.0
    assert newest == [end - timedelta(seconds=s) for s in (4, 3, 2, 1, 0)]
    # Fewer fires than asked for: all of them.
    yearly = cron.parse("0 0 1 1 *")
    assert cron.newest_fire_times(yearly, utc(2020, 6, 1), utc(2023, 6, 1), 10) == [
        utc(2021, 1, 1),
        utc(2022, 1, 1),
        utc(2023, 1, 1),
    ]
