"""The task form's text fields: ``name=value`` lines or JSON, and back without a change; fire
times on the task's clock. No database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from controlplane.dashboard.task_form import format_mapping, parse_mapping, parse_tags
from controlplane.dashboard.templatetags.tasks_tags import fire_local, fire_utc, in_zone


def test_lines_and_json_both_give_a_mapping():
    text = "category = travel\n\n# the first pages only\npages=3\nquery=a=b"
    assert parse_mapping(text) == {"category": "travel", "pages": "3", "query": "a=b"}
    assert parse_mapping('{"pages": 3, "deep": true}') == {"pages": 3, "deep": True}
    assert parse_mapping("  \n ") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("category travel", "line 1: expected name=value, got 'category travel'"),
        ("a=1\n=2", "line 2: expected name=value"),
        ("a=1\na=2", "line 2: 'a' is given twice"),
        ('{"a": 1,}', "not valid JSON"),
        ("[1, 2]", "JSON must be an object"),
        ('"text"', "JSON must be an object"),
    ],
)
def test_malformed_text_says_where(text, message):
    with pytest.raises(ValidationError) as caught:
        parse_mapping(text)
    assert message in caught.value.messages[0]


@pytest.mark.parametrize(
    "mapping",
    [{}, {"category": "travel", "url": "http://x/?a=b"}, {"pages": 3}, {"a": " padded "}],
)
def test_formatting_and_parsing_again_changes_nothing(mapping):
    assert parse_mapping(format_mapping(mapping)) == mapping


def test_tags_split_on_commas_and_spaces():
    assert parse_tags(" eu, fast  big,,") == ["eu", "fast", "big"]
    assert parse_tags("") == []


def test_fire_times_show_the_zone_of_the_moment():
    winter = in_zone(datetime(2026, 1, 5, 5, 30, tzinfo=UTC), "Europe/Paris")
    summer = in_zone(datetime(2026, 7, 6, 4, 30, tzinfo=UTC), "Europe/Paris")
    assert fire_local(winter) == "Mon 2026-01-05 06:30 CET"
    assert fire_local(summer) == "Mon 2026-07-06 06:30 CEST"
    assert fire_utc(summer) == "2026-07-06 04:30 UTC"
    assert fire_local(datetime(2026, 1, 5, 5, 30, 15, tzinfo=UTC)) == "Mon 2026-01-05 05:30:15 UTC"
    assert in_zone(winter, "Not/AZone").tzinfo == UTC
    assert fire_local(None) == "-"
