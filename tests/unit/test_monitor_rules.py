"""Monitor rule kinds on plain figures: parameters, verdicts, sentences, and what is not judged."""

from __future__ import annotations

import pytest

from controlplane.monitors import rules
from controlplane.monitors.rules import Figures, RuleError


def check(kind: str, params: dict, figures: Figures) -> rules.Check:
    normal = rules.parse(kind, params)
    return rules.KINDS[kind].check(normal, figures)


BOOKS = {
    "item_scraped_count": 312,
    "response_received_count": 400,
    "log_count/ERROR": 2,
    "log_count/WARNING": 14,
    "finish_reason": "finished",
    "elapsed_time_seconds": 75.5,
    "downloader/response_status_count/200": 300,
    "downloader/response_status_count/403": 100,
    "crawlfleet/fields_seen": 312,
    "crawlfleet/fields/title": 312,
    "crawlfleet/fields/price": 0,
}


@pytest.mark.parametrize(
    ("kind", "params", "field", "words"),
    [
        ("nope", {}, "kind", "unknown rule kind"),
        ("min_items", {"count": -1}, "count", "at least 0"),
        ("min_items", {"count": 1.5}, "count", "whole number"),
        ("min_items", {"count": 1, "cont": 2}, "cont", "unknown parameter"),
        ("status_share", {"status": 999, "percent": 10}, "status", "not a known HTTP status"),
        ("status_share", {"status": 403, "percent": -5}, "percent", "from 0 to 100"),
        ("status_share", {"status": 403, "percent": 101}, "percent", "from 0 to 100"),
        ("field_coverage", {"field": "no such", "percent": 90}, "field", "item field name"),
        ("history", {"metric": "bytes", "percent": 50}, "metric", "items or pages"),
        ("finish_reasons", {"reasons": []}, "reasons", "list of finish reasons"),
        ("stall", {"seconds": 1}, "seconds", "at least 5"),
        ("max_runtime", {"seconds": True}, "seconds", "whole number"),
    ],
)
def test_malformed_parameters_name_the_field(kind, params, field, words):
    with pytest.raises(RuleError, match=words) as caught:
        rules.parse(kind, params)
    assert caught.value.field == field


def test_parameters_are_normalised_and_targets_tell_rules_apart():
    assert rules.parse("status_share", {"status": "403", "percent": 10}) == {
        "status": 403,
        "percent": 10.0,
    }
    assert rules.parse("history", {"percent": 50}) == {
        "metric": "items",
        "percent": 50.0,
        "runs": 10,
    }
    assert rules.target_of("status_share", {"status": 403, "percent": 1}) == "403"
    assert rules.target_of("min_items", {"count": 1}) == ""


def test_each_rule_writes_its_sentence_with_the_figures():
    figures = Figures(BOOKS)
    assert check("min_items", {"count": 3000}, figures).breach == (
        "312 items, below the minimum of 3,000"
    )
    assert check("min_pages", {"count": 10}, figures).breach == ""
    assert check("max_errors", {"count": 1}, figures).breach == (
        "2 ERROR log lines, above the maximum of 1"
    )
    assert check("max_warnings", {"count": 20}, figures).breach == ""
    assert check("finish_reasons", {"reasons": ["closespider_itemcount"]}, figures).breach == (
        "finish reason 'finished', not one of closespider_itemcount"
    )
    assert check("status_share", {"status": 403, "percent": 10}, figures).breach == (
        "HTTP 403 on 100 of 400 responses (25%), above 10%"
    )
    assert check("status_share", {"status": 429, "percent": 10}, figures).breach == ""
    assert check("max_runtime", {"seconds": 60}, figures).breach == (
        "ran 76 s, longer than the maximum of 60 s"
    )
    assert check("field_coverage", {"field": "price", "percent": 90}, figures).breach == (
        "field 'price' filled in 0 of 312 items (0%), below 90%"
    )
    assert check("field_coverage", {"field": "title", "percent": 90}, figures).breach == ""


def test_history_compares_with_the_median_of_the_last_runs():
    past = [{"items": v, "pages": v} for v in (2950, 3000, 2900, 2950, 10, 3100)]
    figures = Figures(BOOKS, history=past)
    result = check("history", {"percent": 50, "runs": 5}, figures)
    assert result.breach == "312 items, below 50% of the median 2,950 of the last 5 runs"
    assert result.figures["median"] == 2950
    assert check("history", {"percent": 10, "runs": 5}, figures).breach == ""


def test_what_the_evidence_cannot_decide_is_not_evaluated_and_says_why():
    foreign = Figures({"item_scraped_count": 5, "finish_reason": "finished"})
    assert (
        "no field counts" in check("field_coverage", {"field": "x", "percent": 1}, foreign).skipped
    )
    assert "no responses" in check("status_share", {"status": 403, "percent": 1}, foreign).skipped
    assert "run time" in check("max_runtime", {"seconds": 1}, foreign).skipped
    short = Figures(BOOKS, history=[{"items": 1}, {"items": 2}])
    assert check("history", {"percent": 50}, short).skipped == (
        "only 2 earlier successful run(s); 3 needed to compare"
    )
    none = Figures(BOOKS, history=None, history_note="the job belongs to no task")
    assert check("history", {"percent": 50}, none).skipped == "the job belongs to no task"


def test_every_kind_describes_itself():
    samples = {
        "min_items": {"count": 1},
        "min_pages": {"count": 1},
        "max_errors": {"count": 0},
        "max_warnings": {"count": 0},
        "finish_reasons": {"reasons": ["finished"]},
        "status_share": {"status": 403, "percent": 10},
        "max_runtime": {"seconds": 60},
        "field_coverage": {"field": "price", "percent": 95},
        "history": {"percent": 50},
        "stall": {"seconds": 300},
    }
    assert set(samples) == set(rules.KINDS)
    for kind, params in samples.items():
        assert rules.describe(kind, rules.parse(kind, params))
