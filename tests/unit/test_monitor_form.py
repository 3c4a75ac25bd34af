"""The monitor rule form without a database: it offers every kind's parameters (the domain's
list, not a copy that can drift), reads only the chosen kind's, and parses typed text into the
numbers and lists the domain checks."""

from __future__ import annotations

import pytest

from controlplane.dashboard.monitor_form import PARAMETER_NAMES, PARAMETERS, RuleForm
from controlplane.monitors import rules

SAMPLES = {
    "count": 1,
    "reasons": ["finished"],
    "status": 403,
    "field": "price",
    "metric": "items",
    "percent": 10,
    "seconds": 60,
    "runs": 5,
}


@pytest.mark.parametrize("kind", sorted(rules.KINDS))
def test_the_form_offers_exactly_the_parameters_each_kind_takes(kind):
    assert kind in PARAMETERS, f"the rule form has no inputs for kind {kind}"
    names = PARAMETERS[kind]
    assert set(names) <= set(PARAMETER_NAMES)
    normal = rules.parse(kind, {name: SAMPLES[name] for name in names})
    assert set(normal) == set(names)


def test_only_the_chosen_kinds_parameters_are_read_and_parsed():
    form = RuleForm(
        {
            "kind": "status_share",
            "status": " 429 ",
            "percent": "12.5",
            "count": "not read: another kind's input",
            "outcome": "failed",
        }
    )
    assert form.is_valid(), form.errors
    assert form.rule_data() == {
        "kind": "status_share",
        "params": {"status": 429, "percent": 12.5},
        "outcome": "failed",
        "enabled": False,
    }


def test_text_becomes_numbers_and_lists_and_empty_inputs_are_left_to_the_domain():
    form = RuleForm(
        {"kind": "finish_reasons", "reasons": "finished, closespider_timeout", "outcome": "failed"}
    )
    assert form.is_valid(), form.errors
    assert form.rule_data()["params"] == {"reasons": ["finished", "closespider_timeout"]}
    form = RuleForm(
        {"kind": "history", "metric": "pages", "percent": "50", "runs": "", "outcome": "degraded"}
    )
    assert form.is_valid(), form.errors
    assert form.rule_data()["params"] == {"metric": "pages", "percent": 50}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"kind": "min_items", "count": "many"}, "count", "enter a whole number"),
        ({"kind": "min_items", "count": "1.5"}, "count", "enter a whole number"),
        ({"kind": "status_share", "status": "403", "percent": "ten"}, "percent", "enter a number"),
        ({"kind": "status_share", "status": "403", "percent": "nan"}, "percent", "enter a number"),
    ],
)
def test_text_that_is_not_a_number_is_refused_beside_its_input(data, field, message):
    form = RuleForm(data)
    assert not form.is_valid()
    assert form.errors[field] == [message]


def test_an_existing_rule_keeps_its_kind_and_shows_only_its_parameters():
    form = RuleForm(
        {"percent": "20", "field": "price", "outcome": "degraded", "enabled": "on"},
        kind="field_coverage",
    )
    assert "kind" not in form.fields
    assert [bound.name for bound in form.parameter_fields()] == ["field", "percent"]
    assert form.is_valid(), form.errors
    assert form.rule_data() == {
        "params": {"field": "price", "percent": 20},
        "outcome": "degraded",
        "enabled": True,
    }
